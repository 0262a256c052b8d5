package gha

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Signed blob URLs: /gha/blob/u/ID (an upload: Put Blob, Put Block, Put
// Block List) and /gha/blob/d/HEX (a download: GET, with Range or
// x-ms-range), each with query parameters that the signature covers, an
// expiry among them. The path is Azure's path-style form (account "gha",
// container "blob"), which the Azure SDKs parse for any host. Azure's own
// parameters (comp, blockid) are not signed: they choose the call, not
// what it may touch.
const (
	blobPath     = "/gha/blob/"
	uploadPath   = blobPath + "u/"
	downloadPath = blobPath + "d/"
)

// The query parameters of a signed URL (none is one of Azure's SAS names,
// which the SDKs may rewrite).
const (
	qExpires = "tc-exp"
	qSig     = "tc-sig"
	qKey     = "tc-key"  // the entry's backing key (downloads)
	qSize    = "tc-size" // the archive's size (downloads)
)

// sign is the hex HMAC of what a URL grants: its path and the values
// given, in order, with the expiry.
func (k keys) sign(path string, exp int64, values ...string) string {
	m := hmac.New(sha256.New, k.url)
	m.Write([]byte(path))
	for _, v := range values {
		m.Write([]byte{0})
		m.Write([]byte(v))
	}
	m.Write([]byte{0})
	m.Write([]byte(strconv.FormatInt(exp, 10)))
	return hex.EncodeToString(m.Sum(nil))
}

// uploadURL is the signed URL of upload id under base.
func (k keys) uploadURL(base string, id int64, exp time.Time) string {
	path := uploadPath + strconv.FormatInt(id, 10)
	e := exp.Unix()
	q := url.Values{qExpires: {strconv.FormatInt(e, 10)}, qSig: {k.sign(path, e)}}
	return base + path + "?" + q.Encode()
}

// downloadURL is the signed URL of the archive hex, of size bytes, of the
// entry whose backing key is key.
func (k keys) downloadURL(base, hex string, size int64, key string, exp time.Time) string {
	path := downloadPath + hex
	e := exp.Unix()
	sz := strconv.FormatInt(size, 10)
	q := url.Values{qKey: {key}, qSize: {sz}, qExpires: {strconv.FormatInt(e, 10)}, qSig: {k.sign(path, e, key, sz)}}
	return base + path + "?" + q.Encode()
}

// check says whether q signs path with values (taken from q by name), and
// has not expired by now.
func (k keys) check(path string, q url.Values, now time.Time, names ...string) bool {
	e, err := strconv.ParseInt(q.Get(qExpires), 10, 64)
	if err != nil || now.Unix() > e {
		return false
	}
	values := make([]string, len(names))
	for i, n := range names {
		values[i] = q.Get(n)
	}
	got, err := hex.DecodeString(strings.TrimSpace(q.Get(qSig)))
	if err != nil {
		return false
	}
	want, _ := hex.DecodeString(k.sign(path, e, values...))
	return hmac.Equal(got, want)
}

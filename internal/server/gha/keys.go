package gha

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// The namespaces of the refs this package writes. None is a native ref's
// backing key: those are SCOPE.KEY, and a scope starts with a letter or a
// digit (server.ValidateScope).
const (
	// entryNS holds the committed entries: _gha.SCOPE.VERSIONHASH.KEY.
	entryNS = "_gha."
	// reserveNS holds the reservations by name: _ghr.SCOPE.VERSIONHASH.KEY.
	reserveNS = "_ghr."
	// uploadNS holds the uploads by id: _ghu.ID.
	uploadNS = "_ghu."
	// partNS holds the parts of an upload: _ghp.ID.oOFFSET (v1 chunks)
	// and _ghp.ID.bBLOCKHASH (v2 blocks).
	partNS = "_ghp."
)

// Internal says whether a backing key is this package's bookkeeping (a
// reservation, an upload, a part) rather than an entry: the GC neither
// evicts nor counts those (the uploads expire by Service.Expire), but keeps
// the blobs they name.
func Internal(key string) bool {
	return strings.HasPrefix(key, reserveNS) || strings.HasPrefix(key, uploadNS) || strings.HasPrefix(key, partNS)
}

// IsEntry says whether a backing key is a GHA entry's.
func IsEntry(key string) bool { return strings.HasPrefix(key, entryNS) }

// maxBackingKey is the longest key a store takes (store.ValidateKey).
const maxBackingKey = 128

// versionHash is the part of a backing key that partitions by version:
// 16 hex digits of its sha256.
func versionHash(version string) string {
	sum := sha256.Sum256([]byte(version))
	return hex.EncodeToString(sum[:8])
}

// encodeKey maps a GHA key (any characters) into the characters a backing
// key may hold, one character (or byte) at a time, so that a prefix of a
// key encodes to a prefix of its encoding: letters, digits and '-' stay,
// every other byte is '_' and two hex digits. The encoding has no '.'.
func encodeKey(key string) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "_%02x", c)
		}
	}
	return b.String()
}

// hashSuffix is the length of what ends a key cut to fit: '.' and 16 hex
// digits of the key's sha256.
const hashSuffix = 17

// nameKey is the backing key of (scope, version, key) in namespace ns. A
// key whose encoding does not fit is cut, and the sha256 of the whole key
// ends it after a '.' (which no encoding holds), so that two keys never
// share a backing key unless their hashes collide; the record behind it
// names the whole key either way, and is checked.
func nameKey(ns, scope, version, key string) string {
	base := ns + scope + "." + versionHash(version) + "."
	enc := encodeKey(key)
	if room := maxBackingKey - len(base); len(enc) > room {
		sum := sha256.Sum256([]byte(key))
		enc = enc[:room-hashSuffix] + "." + hex.EncodeToString(sum[:8])
	}
	return base + enc
}

// namePrefix is the backing-key prefix under which every key of (scope,
// version) that starts with prefix is found: the encoding of the prefix,
// cut where a key cut to fit would be.
func namePrefix(ns, scope, version, prefix string) string {
	base := ns + scope + "." + versionHash(version) + "."
	enc := encodeKey(prefix)
	if room := maxBackingKey - len(base) - hashSuffix; len(enc) > room {
		enc = enc[:room]
	}
	return base + enc
}

// uploadKey is the backing key of upload id.
func uploadKey(id int64) string { return fmt.Sprintf("%s%d", uploadNS, id) }

// partsPrefix is the prefix of the parts of upload id.
func partsPrefix(id int64) string { return fmt.Sprintf("%s%d.", partNS, id) }

// chunkKey is the backing key of the v1 chunk of upload id at off.
func chunkKey(id, off int64) string { return fmt.Sprintf("%s%d.o%016x", partNS, id, off) }

// blockKey is the backing key of the v2 block blockID of upload id.
func blockKey(id int64, blockID string) string {
	sum := sha256.Sum256([]byte(blockID))
	return fmt.Sprintf("%s%d.b%s", partNS, id, hex.EncodeToString(sum[:]))
}

// NameRef is the scope and the key the status page shows for a GHA
// entry's backing key ("gha " and the key, cut with "..." when the
// backing key holds only its start); ok false for any other key.
func NameRef(bk string) (scope, name string, ok bool) {
	rest, found := strings.CutPrefix(bk, entryNS)
	if !found {
		return "", "", false
	}
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) != 3 {
		return "", "", false
	}
	enc, _, cut := strings.Cut(parts[2], ".")
	var b strings.Builder
	for i := 0; i < len(enc); i++ {
		if enc[i] == '_' && i+2 < len(enc) {
			if c, err := hex.DecodeString(enc[i+1 : i+3]); err == nil {
				b.Write(c)
				i += 2
				continue
			}
		}
		b.WriteByte(enc[i])
	}
	name = "gha " + b.String()
	if cut {
		name += "..."
	}
	return parts[0], name, true
}

// Package gcsstore is the gs:// store: Google Cloud Storage, through a
// gocloud.dev blob driver of its own over the JSON API's generated client
// (driver.go).
//
// # URLs
//
//	gs://BUCKET/PREFIX
//	gs://BUCKET/PREFIX?anonymous=true
//
// The path is the prefix under which the store's objects live
// (PREFIX/v1/blobs/sha256/<hex>, PREFIX/v1/refs/<key>). The query takes
// gocloud gcsblob's parameters: anonymous=true (and access_id=-),
// universe_domain, and access_id and private_key_path (for signed URLs,
// accepted and unused); and one of this package's own:
//
//   - endpoint: the JSON API endpoint, e.g. a Private Service Connect
//     endpoint https://storage-myendpoint.p.googleapis.com/storage/v1/.
//     Only https://*.googleapis.com and loopback hosts are accepted: the
//     access token goes wherever the endpoint points.
//
// grpc=true and zonal=true are refused (this store speaks the JSON API over
// HTTP), and so is any other parameter.
//
// Credentials are Google's Application Default Credentials:
// GOOGLE_APPLICATION_CREDENTIALS naming a service account key or a workload
// identity federation (external_account) file, gcloud's application default
// credentials, or the metadata server (GKE workload identity, GCE). With
// STORAGE_EMULATOR_HOST=host:port (an emulator such as fake-gcs-server;
// "http://host:port" is accepted too) no credentials are used.
//
// Uploads are resumable uploads in 16 MiB chunks, sent one after the other
// (GCS has no parallel parts); an upload whose source fails or whose
// context is cancelled is never finalized, so no object appears.
package gcsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/auth"
	"gocloud.dev/blob"
	"golang.org/x/oauth2"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	"google.golang.org/api/option/internaloption"
	storagev1 "google.golang.org/api/storage/v1"
	htransport "google.golang.org/api/transport/http"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/cloudblob"
)

// Scheme is the URL scheme of this store.
const Scheme = "gs"

// uploadChunkSize is the resumable upload chunk: GCS sends chunks in
// sequence, so fewer, larger ones are faster (this is the SDK's default).
const uploadChunkSize = 16 << 20

// Open implements store.Opener for gs:// URLs.
func Open(ctx context.Context, u *url.URL, opts store.Options) (store.Store, error) {
	return cloudblob.OpenStore(ctx, u, opts, New)
}

// New opens the bucket a gs:// URL names.
func New(ctx context.Context, u *url.URL, opts store.Options) (*cloudblob.Bucket, error) {
	name, prefix, err := cloudblob.Locate(u, Scheme, "bucket")
	if err != nil {
		return nil, err
	}
	q := u.Query()
	var copts []option.ClientOption
	anonymous := false
	if v := q.Get("anonymous"); v != "" {
		if anonymous, err = strconv.ParseBool(v); err != nil {
			return nil, store.BadURL(fmt.Errorf("%s: invalid value %q for anonymous: use true or false", name, v))
		}
	}
	if q.Get("access_id") == "-" {
		anonymous = true
	}
	if anonymous {
		copts = append(copts, option.WithoutAuthentication())
	}
	endpoint := false
	if ep := q.Get("endpoint"); ep != "" {
		endpoint = true
		if err := checkEndpoint(ep); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		copts = append(copts, option.WithEndpoint(ep))
	}
	if ud := q.Get("universe_domain"); ud != "" {
		copts = append(copts, option.WithUniverseDomain(ud))
	}
	for k := range q {
		switch k {
		case "anonymous", "endpoint", "universe_domain":
		case "access_id", "private_key_path":
			// gcsblob's, for signed URLs, which a cache never makes:
			// accepted, so that the reference tool's URLs keep working.
		case "grpc", "zonal":
			return nil, store.BadURL(fmt.Errorf("%s: %s is not supported: the gs:// store speaks the JSON API over HTTP", name, k))
		default:
			return nil, store.BadURL(fmt.Errorf("%s: unknown parameter %q: gs:// URLs take anonymous, endpoint and universe_domain", name, k))
		}
	}
	if host := os.Getenv("STORAGE_EMULATOR_HOST"); host != "" {
		// An emulator: no credentials, and its address unless the URL
		// names an endpoint.
		copts = append(copts, option.WithoutAuthentication())
		if !endpoint {
			if !strings.Contains(host, "://") {
				host = "http://" + host
			}
			copts = append(copts, option.WithEndpoint(strings.TrimSuffix(host, "/")+"/storage/v1/"))
		}
	}
	classify := classify(u.Host)
	hc, err := httpClient(ctx, copts, opts.Stall())
	if err != nil {
		return nil, fmt.Errorf("%s: opening: %w", name, cloudblob.MapError(err, classify, nil))
	}
	svc, err := storagev1.NewService(ctx, append(copts, option.WithHTTPClient(hc))...)
	if err != nil {
		return nil, fmt.Errorf("%s: opening: %w", name, cloudblob.MapError(err, classify, nil))
	}
	return cloudblob.New(cloudblob.Config{
		Bucket:         blob.NewBucket(&bucket{svc: svc, name: u.Host}),
		Name:           name,
		Prefix:         prefix,
		Classify:       classify,
		MissingBucket:  fmt.Sprintf("bucket %q does not exist", u.Host),
		UploadPartSize: uploadChunkSize,
	}), nil
}

// checkEndpoint allows an endpoint that can be trusted with the access
// token: https on a googleapis.com host (Private Service Connect, restricted
// VIPs), or an emulator on loopback. A URL parameter must not be able to
// send the token elsewhere.
func checkEndpoint(ep string) error {
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" {
		return fmt.Errorf("invalid endpoint %q: write https://HOST/storage/v1/", ep)
	}
	h := u.Hostname()
	if h == "localhost" || net.ParseIP(h).IsLoopback() {
		return nil
	}
	if u.Scheme == "https" && strings.HasSuffix(h, ".googleapis.com") {
		return nil
	}
	return fmt.Errorf("endpoint %q refused: the access token goes where the endpoint points, so it must be https://*.googleapis.com (e.g. Private Service Connect) or a loopback emulator", u.Scheme+"://"+u.Host)
}

// httpClient is the client Google's SDKs build (the same credentials and
// scopes, or none under option.WithoutAuthentication) over a transport
// with stall detection (store.WatchTransport).
func httpClient(ctx context.Context, copts []option.ClientOption, stall time.Duration) (*http.Client, error) {
	base := store.WatchTransport(http.DefaultTransport.(*http.Transport).Clone(), stall)
	opts := append([]option.ClientOption{option.WithScopes(storagev1.DevstorageFullControlScope, "https://www.googleapis.com/auth/cloud-platform"),
		internaloption.EnableNewAuthLibrary()}, copts...)
	rt, err := htransport.NewTransport(ctx, base, opts...)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: rt}, nil
}

const credHint = "check GOOGLE_APPLICATION_CREDENTIALS (a service account key or workload identity federation file) or the workload identity of the pod, and the bucket's IAM"

var authCode = regexp.MustCompile(`auth: "([^"]+)"`)

// classify is the one place where GCS errors get a cause a user can act on.
func classify(bucket string) cloudblob.Classifier {
	missing := fmt.Sprintf("bucket %q does not exist", bucket)
	return func(err error) (string, bool) {
		var ge *googleapi.Error
		if errors.As(err, &ge) {
			reason := ""
			if len(ge.Errors) > 0 {
				reason = ge.Errors[0].Reason
			}
			switch {
			case ge.Code == 404 && strings.Contains(strings.ToLower(ge.Message), "bucket does not exist"):
				return missing, true
			case ge.Code == 401 || ge.Code == 403:
				why := fmt.Sprintf("HTTP %d", ge.Code)
				if reason != "" {
					why += " " + reason
				}
				return fmt.Sprintf("access denied (%s): %s", why, credHint), true
			}
		}
		var ae *auth.Error
		if errors.As(err, &ae) {
			why := "token request failed"
			var body struct {
				Error string `json:"error"`
			}
			if m := authCode.FindStringSubmatch(ae.Error()); m != nil {
				why = m[1]
			} else if json.Unmarshal(ae.Body, &body) == nil && body.Error != "" {
				why = body.Error
			} else if ae.Response != nil {
				why = fmt.Sprintf("HTTP %d", ae.Response.StatusCode)
			}
			return fmt.Sprintf("cannot get a Google access token (%s): %s", why, credHint), true
		}
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			why := re.ErrorCode
			if why == "" && re.Response != nil {
				why = fmt.Sprintf("HTTP %d", re.Response.StatusCode)
			}
			return fmt.Sprintf("cannot get a Google access token (%s): %s", why, credHint), true
		}
		if msg := err.Error(); strings.Contains(msg, "could not find default credentials") {
			return "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service account key or workload identity federation file, run with a workload identity, or add anonymous=true to the URL for a public bucket", true
		}
		return "", false
	}
}

// Package s3store is the s3:// store: Amazon S3 and S3-compatible servers
// (MinIO, Ceph, versitygw, R2 ...), through gocloud.dev's s3blob driver.
//
// # URLs
//
//	s3://BUCKET/PREFIX?region=eu-west-1
//	s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:9000&use_path_style=true&region=us-east-1
//
// The path is the prefix under which the store's objects live
// (PREFIX/v1/blobs/sha256/<hex>, PREFIX/v1/refs/<key>). The query is handed
// to gocloud's s3blob URL opener unchanged, so every parameter it knows
// works: region, endpoint, use_path_style (or s3ForcePathStyle),
// disable_https, profile, anonymous, role, awssdk, hostname_immutable,
// dualstack, fips, accelerate, ssetype, kmskeyid, rate_limiter_capacity,
// request_checksum_calculation, response_checksum_validation. Two defaults
// are added for S3-compatible servers: with an endpoint and no region from
// the URL, environment or profile, region is us-east-1; with an endpoint on
// an IP address or localhost, use_path_style is true. Unless set,
// response_checksum_validation is when_required: readers verify every blob's
// sha256 themselves.
//
// Credentials come from the AWS SDK's default chain: AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), AWS_PROFILE with
// AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE, web identity
// (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, as EKS IRSA sets), container
// and EC2 instance roles.
//
// Uploads of 8 MiB or more are multipart, 4 parts of 8 MiB at a time; a
// failed or cancelled upload is aborted (AbortMultipartUpload, with a fresh
// 30 s context so that a cancelled caller does not leave parts behind), and
// aborted again over the next 3 s when a part got no answer, as a part the
// server was still writing can bring the upload back after an abort.
package s3store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"gocloud.dev/blob/s3blob"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/cloudblob"
)

// Scheme is the URL scheme of this store.
const Scheme = "s3"

// DefaultRegion is the region used with a custom endpoint when none is set:
// S3-compatible servers accept it, and SigV4 needs one.
const DefaultRegion = "us-east-1"

// abortTimeout bounds the AbortMultipartUpload sent after a failed upload.
const abortTimeout = 30 * time.Second

// Open implements store.Opener for s3:// URLs.
func Open(ctx context.Context, u *url.URL, opts store.Options) (store.Store, error) {
	return cloudblob.OpenStore(ctx, u, opts, New)
}

// New opens the bucket an s3:// URL names.
func New(ctx context.Context, u *url.URL, opts store.Options) (*cloudblob.Bucket, error) {
	name, prefix, err := cloudblob.Locate(u, Scheme, "bucket")
	if err != nil {
		return nil, err
	}
	secrets := cloudblob.EnvSecrets("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
	q := u.Query()
	endpoint := q.Get("endpoint")
	if endpoint == "" {
		endpoint = firstEnv("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	}
	if endpoint != "" && q.Get("use_path_style") == "" && q.Get("s3ForcePathStyle") == "" && isLocalOrIP(endpoint) {
		q.Set("use_path_style", "true") // a bucket cannot be a subdomain of an IP address
	}
	if q.Get("response_checksum_validation") == "" {
		// Readers verify every blob's sha256; the SDK's CRC check adds
		// nothing but a warning per multipart object.
		q.Set("response_checksum_validation", "when_required")
	}
	// gocloud's opener parses the query; its client is then rebuilt with
	// the defaults above, stall detection, no SDK retries, and, with
	// opts.Insecure, unverified TLS.
	opener := &s3blob.URLOpener{}
	bkt, err := opener.OpenBucketURL(ctx, &url.URL{Scheme: Scheme, Host: u.Host, RawQuery: q.Encode()})
	if err != nil {
		return nil, cloudblob.OpenError(name, err, secrets)
	}
	var parsed *s3.Client
	ok := bkt.As(&parsed)
	bkt.Close()
	if !ok {
		return nil, fmt.Errorf("%s: opening: s3blob did not expose its *s3.Client", name)
	}
	o := parsed.Options()
	if o.Region == "" {
		if endpoint == "" {
			return nil, store.BadURL(fmt.Errorf("%s: no AWS region: add region=REGION to the URL or set AWS_REGION", name))
		}
		o.Region = DefaultRegion
	}
	// One attempt per request: the retries are the store layer's
	// (store.WithRetries), with one policy and one log line per retry.
	o.Retryer = aws.NopRetryer{}
	httpClient := awshttp.NewBuildableClient()
	if opts.Insecure {
		httpClient = httpClient.WithTransportOptions(func(tr *http.Transport) {
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
		})
	}
	o.HTTPClient = store.WatchDoer(httpClient, opts.Stall())
	client := s3.New(o)
	// opener.Options now holds what the query set (ssetype, kmskeyid,
	// request_checksum_calculation).
	if bkt, err = s3blob.OpenBucket(ctx, client, u.Host, &opener.Options); err != nil {
		return nil, cloudblob.OpenError(name, err, secrets)
	}
	return cloudblob.New(cloudblob.Config{
		Bucket:      bkt,
		Name:        name,
		Prefix:      prefix,
		Classify:    classify(u.Host),
		Secrets:     secrets,
		BeforeWrite: beforeWrite(client),
	}), nil
}

// beforeWrite gives every upload its own transfer manager: parts of
// cloudblob.DefaultPartSize, up to DefaultConcurrency at a time
// (uploadConcurrency), multipart from one part up (so memory stays near
// (Concurrency+2) x PartSize), and a fresh
// context for AbortMultipartUpload, which s3blob's default lacks: without it
// a cancelled upload could not abort and would leave its parts stored. Its
// requests go through an upload, which makes sure a failed one is gone.
func beforeWrite(client *s3.Client) func(size int64) (func(func(any) bool) error, func(error)) {
	return func(size int64) (func(func(any) bool) error, func(error)) {
		up := &upload{Client: client}
		before := func(as func(any) bool) error {
			var tm *transfermanager.Client
			if as(&tm) {
				*tm = *transfermanager.New(up, func(o *transfermanager.Options) {
					o.PartSizeBytes = cloudblob.DefaultPartSize
					o.MultipartUploadThreshold = cloudblob.DefaultPartSize
					o.Concurrency = uploadConcurrency(size)
					o.RequestChecksumCalculation = client.Options().RequestChecksumCalculation
					o.FailTimeout = abortTimeout
				})
			}
			var in *transfermanager.UploadObjectInput
			if size >= 0 && as(&in) {
				// Lets the transfer manager grow parts for objects over
				// 10,000 parts (80 GB).
				in.ContentLength = aws.Int64(size)
			}
			return nil
		}
		return before, func(error) { up.settle() }
	}
}

// uploadConcurrency is how many parts of an upload of size bytes (-1:
// unknown) move at once: as many as follow the first, at most
// cloudblob.DefaultConcurrency. The transfer manager allocates Concurrency+1
// part buffers when a multipart upload starts, whatever its size: a pack of
// two parts would hold five (40 MiB), and a save runs up to eight uploads.
func uploadConcurrency(size int64) int {
	if size < 0 {
		return cloudblob.DefaultConcurrency
	}
	rest := (size - 1) / cloudblob.DefaultPartSize
	return int(max(1, min(rest, cloudblob.DefaultConcurrency)))
}

// reabortPauses are the pauses before each new abort of a failed upload
// that may still have parts in the server's hands: it is looked at 0.2,
// 0.6, 1.4 and 3 s after it failed.
var reabortPauses = []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond}

// upload is the client of one multipart upload, which watches its
// requests. The transfer manager aborts a failed upload once. But a part it
// gave up on without an answer (cancelled, cut off) may still be in the
// server's hands, and S3 documents that such a part can land after the
// abort (versitygw then brings the upload back, parts and all), so that
// an abort may need repeating; a failed abort needs it too.
type upload struct {
	*s3.Client

	mu        sync.Mutex
	in        *s3.AbortMultipartUploadInput // the upload, once created
	unsettled bool                          // a part or the abort got no answer
}

func (u *upload) CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	out, err := u.Client.CreateMultipartUpload(ctx, in, opts...)
	if err == nil {
		u.mu.Lock()
		u.in = &s3.AbortMultipartUploadInput{Bucket: in.Bucket, Key: in.Key, UploadId: out.UploadId, ExpectedBucketOwner: in.ExpectedBucketOwner}
		u.mu.Unlock()
	}
	return out, err
}

func (u *upload) UploadPart(ctx context.Context, in *s3.UploadPartInput, opts ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	out, err := u.Client.UploadPart(ctx, in, opts...)
	if err != nil && !answered(err) {
		u.mu.Lock()
		u.unsettled = true
		u.mu.Unlock()
	}
	return out, err
}

func (u *upload) AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, opts ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	out, err := u.Client.AbortMultipartUpload(ctx, in, opts...)
	if err != nil {
		u.mu.Lock()
		u.unsettled = true
		u.mu.Unlock()
	}
	return out, err
}

// settle aborts the failed upload again after each of reabortPauses, when a part
// or the abort got no answer, for as long as the server has it (it answers
// NoSuchUpload once it is gone, but a part still in its hands can bring it
// back: every pause is waited). Bounded by abortTimeout; what it cannot
// remove is left to a lifecycle rule (docs/CLOUD.md).
func (u *upload) settle() {
	u.mu.Lock()
	in, unsettled := u.in, u.unsettled
	u.mu.Unlock()
	if in == nil || !unsettled {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	for _, d := range reabortPauses {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		u.Client.AbortMultipartUpload(ctx, in) //nolint:errcheck // NoSuchUpload: gone; another error: tried again at the next pause
	}
}

// answered reports whether err came with an answer from the server (the
// request was done, or refused), rather than a cut or a cancellation (which
// the SDK also wraps in a ResponseError, of status 0).
func answered(err error) bool {
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.Response != nil && re.Response.Response != nil && re.HTTPStatusCode() > 0
}

const credHint = "check AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE) and the bucket policy"

// classify is the one place where S3 errors get a cause a user can act on.
func classify(bucket string) cloudblob.Classifier {
	return func(err error) (string, bool) {
		code, status := "", 0
		var ae smithy.APIError
		if errors.As(err, &ae) {
			code = ae.ErrorCode()
		}
		var re *awshttp.ResponseError
		if errors.As(err, &re) {
			status = re.HTTPStatusCode()
		}
		switch code {
		case "NoSuchBucket":
			return fmt.Sprintf("bucket %q does not exist", bucket), true
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "ExpiredToken",
			"InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidSecurity",
			"InvalidClientTokenId", "UnrecognizedClientException":
			return fmt.Sprintf("access denied (%s): %s", code, credHint), true
		case "RequestTimeTooSkewed":
			return "request refused (RequestTimeTooSkewed): the machine's clock is off", true
		case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
			return fmt.Sprintf("wrong region (%s): set region= in the URL (or AWS_REGION) to the bucket's region", code), true
		}
		switch status {
		case 401, 403:
			return fmt.Sprintf("access denied (HTTP %d): %s", status, credHint), true
		case 301:
			return "wrong region (HTTP 301): set region= in the URL (or AWS_REGION) to the bucket's region", true
		}
		msg := err.Error()
		for _, s := range []string{"failed to retrieve credentials", "failed to refresh cached credentials", "no EC2 IMDS role found", "get identity", "static credentials are empty"} {
			if strings.Contains(msg, s) {
				return "no usable AWS credentials (" + s + "): set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE with AWS_SHARED_CREDENTIALS_FILE, or a web identity; or add anonymous=true to the URL for a public bucket", true
			}
		}
		return "", false
	}
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// isLocalOrIP reports whether endpoint's host is an IP address or localhost.
func isLocalOrIP(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return false
	}
	h := u.Hostname()
	return h == "localhost" || net.ParseIP(h) != nil
}

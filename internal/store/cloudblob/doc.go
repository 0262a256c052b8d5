// Package cloudblob adapts a gocloud.dev *blob.Bucket to store.Bucket. It
// holds what the s3://, gs:// and azblob:// backends share, so that each of
// them is only an opener plus its own error classification:
//
//   - object names under the URL's prefix path;
//   - Put through blob.Bucket.Upload, all-or-nothing: a read error or a
//     cancelled context cancels the upload's context before gocloud closes
//     the writer, so the object is never committed (multipart uploads and
//     staged blocks are aborted or left uncommitted);
//   - Get that streams small objects and reads large ones in parallel
//     ranges, with memory bounded by Concurrency x PartSize;
//   - one error mapping: gcerrors.NotFound wraps store.ErrNotFound, an
//     unreachable endpoint says so, the backend's Classify names the cause
//     (access denied, missing bucket), and every message is one line with
//     known secrets removed.
package cloudblob

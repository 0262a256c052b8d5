// Package azstore is the azblob:// store: Azure Blob Storage (and Azurite),
// through gocloud.dev's azureblob driver.
//
// # URLs
//
//	azblob://CONTAINER/PREFIX
//	azblob://CONTAINER/PREFIX?storage_account=myaccount
//	azblob://CONTAINER/PREFIX?protocol=http&domain=127.0.0.1:10000   (Azurite, with AZURE_STORAGE_ACCOUNT/KEY)
//
// The path is the prefix under which the store's objects live
// (PREFIX/v1/blobs/sha256/<hex>, PREFIX/v1/refs/<key>). The query is handed
// to gocloud's azureblob URL opener: domain, protocol, cdn, localemu and
// storage_account.
//
// Credentials and the service URL come from the environment, as gocloud
// reads it, in this order: AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY
// (shared key); AZURE_STORAGE_SAS_TOKEN; AZURE_STORAGE_CONNECTION_STRING (or
// AZURE_STORAGEBLOB_CONNECTIONSTRING); else Azure AD through
// azidentity.DefaultAzureCredential (AZURE_CLIENT_ID/AZURE_TENANT_ID with
// AZURE_CLIENT_SECRET, AZURE_FEDERATED_TOKEN_FILE as AKS workload identity
// sets, managed identity, az login). AZURE_STORAGE_DOMAIN,
// AZURE_STORAGE_PROTOCOL, AZURE_STORAGE_IS_LOCAL_EMULATOR and
// AZURE_STORAGE_IS_CDN shape the service URL. With a SAS token, URL
// parameters may not move the service to another host (the token would go
// with it).
//
// Uploads are block blobs: 8 MiB blocks, 4 at a time, committed by one Put
// Block List at the end; an upload whose source fails or whose context is
// cancelled never commits its block list, so no blob appears (Azure drops
// uncommitted blocks after a week).
package azstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"gocloud.dev/blob/azureblob"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/cloudblob"
)

// Scheme is the URL scheme of this store.
const Scheme = "azblob"

// secretEnv are the variables whose values must never appear in a message.
var secretEnv = []string{"AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
	"AZURE_STORAGEBLOB_CONNECTIONSTRING", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD"}

// Open implements store.Opener for azblob:// URLs.
func Open(ctx context.Context, u *url.URL, opts store.Options) (store.Store, error) {
	return cloudblob.OpenStore(ctx, u, opts, New)
}

// New opens the container an azblob:// URL names.
func New(ctx context.Context, u *url.URL, opts store.Options) (*cloudblob.Bucket, error) {
	name, prefix, err := cloudblob.Locate(u, Scheme, "container")
	if err != nil {
		return nil, err
	}
	secrets := cloudblob.EnvSecrets(secretEnv...)
	classify := classify(u.Host)
	fail := func(err error) error {
		return fmt.Errorf("%s: opening: %w", name, cloudblob.MapError(err, classify, secrets))
	}
	// A new opener per Open: gocloud's default one reads the environment
	// once per process.
	svc := azureblob.NewDefaultServiceURLOptions()
	if svc.SASToken != "" {
		if err := sameOrigin(svc, u.Query()); err != nil {
			return nil, fail(err)
		}
	}
	opener := &azureblob.URLOpener{MakeClient: clientMaker(opts.Stall()), ServiceURLOptions: *svc}
	bkt, err := opener.OpenBucketURL(ctx, &url.URL{Scheme: Scheme, Host: u.Host, RawQuery: u.RawQuery})
	if err != nil {
		return nil, fail(err)
	}
	return cloudblob.New(cloudblob.Config{
		Bucket:        bkt,
		Name:          name,
		Prefix:        prefix,
		Classify:      classify,
		MissingBucket: fmt.Sprintf("container %q does not exist", u.Host),
		Secrets:       secrets,
	}), nil
}

// clientMaker returns azureblob.NewDefaultClient (the same credentials from
// the same variables, in the same order) with two changes: one attempt per
// request, since the retries are the store layer's (store.WithRetries), and
// stall detection on every request (store.WatchDoer).
func clientMaker(stall time.Duration) func(azureblob.ServiceURL, azureblob.ContainerName) (*container.Client, error) {
	return func(svcURL azureblob.ServiceURL, containerName azureblob.ContainerName) (*container.Client, error) {
		return makeClient(svcURL, containerName, stall)
	}
}

func makeClient(svcURL azureblob.ServiceURL, containerName azureblob.ContainerName, stall time.Duration) (*container.Client, error) {
	opts := &container.ClientOptions{}
	opts.Retry.MaxRetries = -1 // azcore: "less than zero means one try and no retries"
	opts.Transport = store.WatchDoer(&http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}, stall)
	containerURL, err := url.JoinPath(string(svcURL), string(containerName))
	if err != nil {
		return nil, err
	}
	accountName, accountKey := os.Getenv("AZURE_STORAGE_ACCOUNT"), os.Getenv("AZURE_STORAGE_KEY")
	connStr := os.Getenv("AZURE_STORAGE_CONNECTION_STRING")
	if connStr == "" {
		connStr = os.Getenv("AZURE_STORAGEBLOB_CONNECTIONSTRING")
	}
	switch {
	case accountName != "" && accountKey != "":
		cred, err := azblob.NewSharedKeyCredential(accountName, accountKey)
		if err != nil {
			return nil, err
		}
		return container.NewClientWithSharedKeyCredential(containerURL, cred, opts)
	case os.Getenv("AZURE_STORAGE_SAS_TOKEN") != "":
		return container.NewClientWithNoCredential(containerURL, opts)
	case connStr != "":
		return container.NewClientFromConnectionString(connStr, string(containerName), opts)
	default:
		cred, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, err
		}
		return container.NewClient(containerURL, cred, opts)
	}
}

// sameOrigin refuses URL parameters that would send the SAS token of the
// environment to another host (as gocloud's default opener does).
func sameOrigin(svc *azureblob.ServiceURLOptions, q url.Values) error {
	def, err := azureblob.NewServiceURL(svc)
	if err != nil {
		return err
	}
	over := *svc
	for k, v := range q {
		switch k {
		case "domain":
			over.StorageDomain = v[0]
		case "protocol":
			over.Protocol = v[0]
		case "storage_account":
			over.AccountName = v[0]
		case "cdn":
			over.IsCDN = v[0] == "true"
		case "localemu":
			over.IsLocalEmulator = v[0] == "true"
		}
	}
	got, err := azureblob.NewServiceURL(&over)
	if err != nil {
		return err
	}
	a, _ := url.Parse(string(def))
	b, _ := url.Parse(string(got))
	if a == nil || b == nil || !strings.EqualFold(a.Scheme, b.Scheme) || !strings.EqualFold(a.Host, b.Host) {
		return errors.New("URL parameters cannot change the service endpoint when AZURE_STORAGE_SAS_TOKEN is set")
	}
	return nil
}

const credHint = "check AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, or the pod's Azure identity and its role on the container"

// classify is the one place where Azure errors get a cause a user can act on.
func classify(container string) cloudblob.Classifier {
	return func(err error) (string, bool) {
		var re *azcore.ResponseError
		if errors.As(err, &re) {
			switch code := bloberror.Code(re.ErrorCode); code {
			case bloberror.ContainerNotFound:
				return fmt.Sprintf("container %q does not exist", container), true
			case bloberror.AuthenticationFailed, bloberror.AuthorizationFailure, bloberror.AuthorizationPermissionMismatch,
				bloberror.AuthorizationSourceIPMismatch, bloberror.AuthorizationProtocolMismatch, bloberror.AuthorizationResourceTypeMismatch,
				bloberror.AuthorizationServiceMismatch, bloberror.InsufficientAccountPermissions, bloberror.AccountIsDisabled,
				bloberror.NoAuthenticationInformation, bloberror.InvalidAuthenticationInfo:
				return fmt.Sprintf("access denied (%s): %s", code, credHint), true
			}
			if re.StatusCode == 401 || re.StatusCode == 403 {
				return fmt.Sprintf("access denied (HTTP %d): %s", re.StatusCode, credHint), true
			}
		}
		var afe *azidentity.AuthenticationFailedError
		if errors.As(err, &afe) {
			why := "token request failed"
			if afe.RawResponse != nil {
				why = fmt.Sprintf("HTTP %d", afe.RawResponse.StatusCode)
			}
			return fmt.Sprintf("cannot get an Azure AD token (%s): %s", why, credHint), true
		}
		msg := err.Error()
		switch {
		case strings.Contains(msg, "DefaultAzureCredential") || strings.Contains(msg, "credential unavailable"):
			return "no Azure credentials found: " + credHint, true
		case strings.Contains(msg, "AccountName is required"):
			return "no Azure storage account: set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT, or add storage_account=NAME to the URL", true
		case strings.Contains(msg, "illegal base64") || strings.Contains(msg, "decode account key"):
			return "the storage account key is not valid base64: " + credHint, true
		}
		return "", false
	}
}

package azstore_test

import (
	"encoding/base64"
	"fmt"
	"github.com/tekton-cache/tekton-cache/internal/gc/gctest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/tekton-cache/tekton-cache/internal/store"
	azstore "github.com/tekton-cache/tekton-cache/internal/store/azure"
	"github.com/tekton-cache/tekton-cache/internal/store/cloudblob"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

const (
	containerName = "tekton-cache-test"
	account       = testserver.AzuriteAccount
	accountKey    = testserver.AzuriteKey
)

// startAzurite starts Azurite's blob service and returns its endpoint,
// http://127.0.0.1:PORT/devstoreaccount1.
func startAzurite(t testing.TB) string {
	if testing.Short() {
		t.Skip("starts a server: not with -short")
	}
	return testserver.Azurite(t)
}

func connString(endpoint, key string) string { return testserver.AzuriteConnString(endpoint, key) }

// TestAzurite runs everything against Azurite.
func TestAzurite(t *testing.T) {
	endpoint := setUp(t)
	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return open(t, "azblob://"+containerName+"/"+storetest.NewPrefix()) },
			storetest.Options{
				Lacks:       []string{"BlobStager"},
				LargeSize:   20 << 20,
				Missing:     func(t *testing.T) store.Store { return open(t, "azblob://no-such-container-here/p") },
				MissingWant: []string{`container "no-such-container-here" does not exist`},
				Secrets:     []string{accountKey},
				Leftovers:   leftovers,
			})
	})
	t.Run("AccountAndKey", func(t *testing.T) {
		t.Setenv("AZURE_STORAGE_CONNECTION_STRING", "")
		os.Unsetenv("AZURE_STORAGE_CONNECTION_STRING")
		t.Setenv("AZURE_STORAGE_ACCOUNT", account)
		t.Setenv("AZURE_STORAGE_KEY", accountKey)
		u, _ := url.Parse(endpoint)
		st := open(t, "azblob://"+containerName+"/"+storetest.NewPrefix()+"?protocol=http&domain="+u.Host)
		d := storetest.PutBlob(t, st, []byte("hello"))
		if info, err := st.StatBlob(t.Context(), d.Digest); err != nil || info.Size != 5 {
			t.Fatalf("StatBlob = %+v, %v", info, err)
		}
	})
	t.Run("WrongCredentials", func(t *testing.T) { testWrongCredentials(t, endpoint) })
	t.Run("UnreachableEndpoint", testUnreachable)
	t.Run("SaveRestore", func(t *testing.T) { testSaveRestore(t, open(t, "azblob://"+containerName+"/"+storetest.NewPrefix())) })
	t.Run("Prune", func(t *testing.T) {
		gctest.Run(t, func(t *testing.T) store.Store {
			return store.Checked(open(t, "azblob://"+containerName+"/"+storetest.NewPrefix()))
		})
	})
}

// BenchmarkConformance measures the store operations against Azurite.
func BenchmarkConformance(b *testing.B) {
	setUp(b)
	storetest.Bench(b, func(b *testing.B) store.Store { return open(b, "azblob://"+containerName+"/"+storetest.NewPrefix()) })
}

// setUp starts Azurite for t, points the client at it, creates the
// container and returns the endpoint.
func setUp(t testing.TB) string {
	endpoint := startAzurite(t)
	isolateAzure(t)
	t.Setenv("AZURE_STORAGE_CONNECTION_STRING", connString(endpoint, accountKey))
	createContainer(t, containerName)
	return endpoint
}

func open(t testing.TB, raw string) *store.ObjectStore {
	return storetest.OpenObjectStore(t, azstore.Open, raw)
}

// isolateAzure keeps the developer's Azure settings out of the tests.
func isolateAzure(t testing.TB) {
	for _, k := range []string{"AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
		"AZURE_STORAGEBLOB_CONNECTIONSTRING", "AZURE_STORAGE_DOMAIN", "AZURE_STORAGE_PROTOCOL", "AZURE_STORAGE_IS_CDN",
		"AZURE_STORAGE_IS_LOCAL_EMULATOR", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

func createContainer(t testing.TB, name string) {
	st := open(t, "azblob://"+name)
	var c *container.Client
	if !st.Bucket().(*cloudblob.Bucket).Blob().As(&c) {
		t.Fatal("no *container.Client behind the bucket")
	}
	if _, err := c.Create(t.Context(), nil); err != nil {
		t.Fatalf("creating container %s: %v", name, err)
	}
}

// leftovers lists the blobs under the prefix of st: a failed put may have
// staged blocks, but must never commit a block list. Uncommitted blocks are
// not listed: no call removes them, and Azure drops them within a week.
func leftovers(t *testing.T, st store.Store) []string {
	obj := st.(*store.ObjectStore)
	var c *container.Client
	if !obj.Bucket().(*cloudblob.Bucket).Blob().As(&c) {
		t.Fatal("no *container.Client behind the bucket")
	}
	prefix := strings.TrimPrefix(obj.String(), "azblob://"+containerName+"/") + "/"
	var left []string
	pager := c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &prefix})
	for pager.More() {
		page, err := pager.NextPage(t.Context())
		if err != nil {
			t.Fatalf("listing %s: %v", prefix, err)
		}
		for _, b := range page.Segment.BlobItems {
			left = append(left, "blob "+*b.Name)
		}
	}
	return left
}

func testWrongCredentials(t *testing.T, endpoint string) {
	wrong := base64.StdEncoding.EncodeToString([]byte("wrong-account-key-value-0c4d2e9b"))
	t.Setenv("AZURE_STORAGE_CONNECTION_STRING", connString(endpoint, wrong))
	prefix := storetest.NewPrefix()
	st := open(t, "azblob://"+containerName+"/"+prefix)
	storetest.CheckAllOps(t, st, storetest.ErrorWant{Store: "azblob://" + containerName + "/" + prefix, Says: []string{"access denied", "AZURE_STORAGE_CONNECTION_STRING"},
		Secrets: []string{wrong, accountKey}})
}

func testUnreachable(t *testing.T) {
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", testserver.FreePort(t))
	t.Setenv("AZURE_STORAGE_CONNECTION_STRING", connString(endpoint+"/"+account, accountKey))
	st := open(t, "azblob://"+containerName+"/p")
	storetest.CheckAllOps(t, st, storetest.ErrorWant{Store: "azblob://" + containerName + "/p", Says: []string{"cannot reach " + endpoint + ": connection refused"},
		Secrets: []string{accountKey}})
}

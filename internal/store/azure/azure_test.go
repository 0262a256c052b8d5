package azstore_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/tekton-cache/tekton-cache/internal/digest"
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
func startAzurite(t *testing.T) string {
	if testing.Short() {
		t.Skip("starts a server: not with -short")
	}
	return testserver.Azurite(t)
}

func connString(endpoint, key string) string { return testserver.AzuriteConnString(endpoint, key) }

// TestAzurite runs everything against Azurite.
func TestAzurite(t *testing.T) {
	endpoint := startAzurite(t)
	isolateAzure(t)
	t.Setenv("AZURE_STORAGE_CONNECTION_STRING", connString(endpoint, accountKey))
	createContainer(t, containerName)
	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return open(t, "azblob://"+containerName+"/"+storetest.NewPrefix()) },
			storetest.Options{LargeSize: 20 << 20})
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
	t.Run("FailedLargePutLeavesNothing", testFailedLargePut)
	t.Run("MissingContainer", testMissingContainer)
	t.Run("WrongCredentials", func(t *testing.T) { testWrongCredentials(t, endpoint) })
	t.Run("UnreachableEndpoint", testUnreachable)
	t.Run("SaveRestore", func(t *testing.T) { testSaveRestore(t, open(t, "azblob://"+containerName+"/"+storetest.NewPrefix())) })
}

func open(t *testing.T, raw string) *store.ObjectStore {
	return storetest.OpenObjectStore(t, azstore.Open, raw)
}

// isolateAzure keeps the developer's Azure settings out of the tests.
func isolateAzure(t *testing.T) {
	for _, k := range []string{"AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
		"AZURE_STORAGEBLOB_CONNECTIONSTRING", "AZURE_STORAGE_DOMAIN", "AZURE_STORAGE_PROTOCOL", "AZURE_STORAGE_IS_CDN",
		"AZURE_STORAGE_IS_LOCAL_EMULATOR", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

func createContainer(t *testing.T, name string) {
	st := open(t, "azblob://"+name)
	var c *container.Client
	if !st.Bucket().(*cloudblob.Bucket).Blob().As(&c) {
		t.Fatal("no *container.Client behind the bucket")
	}
	if _, err := c.Create(t.Context(), nil); err != nil {
		t.Fatalf("creating container %s: %v", name, err)
	}
}

// testFailedLargePut fails an upload after blocks were staged: the block
// list must never be committed.
func testFailedLargePut(t *testing.T) {
	st := open(t, "azblob://"+containerName+"/"+storetest.NewPrefix())
	data, d := storetest.RandomBlob(t, 40<<20)
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	if err := st.PutBlob(t.Context(), d, int64(len(bad)), bytes.NewReader(bad)); err == nil {
		t.Fatal("PutBlob of corrupt bytes succeeded")
	}
	if _, err := st.StatBlob(t.Context(), d); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("StatBlob after a failed put = %v, want not found", err)
	}
}

func testMissingContainer(t *testing.T) {
	st := open(t, "azblob://no-such-container-here/p")
	name := "azblob://no-such-container-here/p"
	checkAllOps(t, st, name, []string{`container "no-such-container-here" does not exist`}, accountKey)
}

func testWrongCredentials(t *testing.T, endpoint string) {
	wrong := base64.StdEncoding.EncodeToString([]byte("wrong-account-key-value-0c4d2e9b"))
	t.Setenv("AZURE_STORAGE_CONNECTION_STRING", connString(endpoint, wrong))
	prefix := storetest.NewPrefix()
	st := open(t, "azblob://"+containerName+"/"+prefix)
	checkAllOps(t, st, "azblob://"+containerName+"/"+prefix, []string{"access denied", "AZURE_STORAGE_CONNECTION_STRING"}, wrong, accountKey)
}

func testUnreachable(t *testing.T) {
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", testserver.FreePort(t))
	t.Setenv("AZURE_STORAGE_CONNECTION_STRING", connString(endpoint+"/"+account, accountKey))
	st := open(t, "azblob://"+containerName+"/p")
	checkAllOps(t, st, "azblob://"+containerName+"/p", []string{"cannot reach " + endpoint + ": connection refused"}, accountKey)
}

// checkAllOps runs each store operation and checks its error.
func checkAllOps(t *testing.T, st store.Store, storeName string, wants []string, secrets ...string) {
	t.Helper()
	data := make([]byte, 1000)
	rand.Read(data)
	_, err := st.GetRef(t.Context(), "some-key")
	storetest.CheckError(t, "GetRef", err, storeName, wants, secrets...)
	err = st.PutBlob(t.Context(), digest.FromBytes(data), int64(len(data)), bytes.NewReader(data))
	storetest.CheckError(t, "PutBlob", err, storeName, wants, secrets...)
	_, err = st.ListRefs(t.Context(), "some")
	storetest.CheckError(t, "ListRefs", err, storeName, wants, secrets...)
	_, err = st.StatBlob(t.Context(), digest.FromBytes(data))
	storetest.CheckError(t, "StatBlob", err, storeName, wants, secrets...)
}

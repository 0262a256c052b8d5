package cli

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	storagev1 "google.golang.org/api/storage/v1"

	"github.com/tekton-cache/tekton-cache/internal/faultproxy"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/all"
	"github.com/tekton-cache/tekton-cache/internal/store/cloudblob"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// The secrets the test hands the commands, each unique so that a leak is
// found wherever it lands. None may appear in any output.
const (
	secURLPassword = "urlPassw0rd-LEAK1"
	secSignature   = "sigValue-LEAK2"
	secAWSSecret   = "awsSecretKey-LEAK3"
	secMinIO       = "minioRootSecret-LEAK4"
	secRegistry    = "registryPass-LEAK5"
	secRegWrong    = "registryWrong-LEAK6"
	secSAS         = "sasSignature-LEAK7"
	secGCSKey      = "gcsPrivateKey-LEAK8"
	secAWSSession  = "awsSessionToken-LEAK9"
)

// secAzureKey is a wrong Azure account key (it must be base64).
var secAzureKey = base64.StdEncoding.EncodeToString([]byte("azureAccountKey-LEAK10-padding!!"))

func allSecrets() []string {
	s := []string{secURLPassword, secSignature, secAWSSecret, secMinIO, secRegistry, secRegWrong, secSAS, secGCSKey,
		secAWSSession, secAzureKey, testserver.AzuriteKey}
	var out []string
	for _, v := range s {
		out = append(out, v, url.QueryEscape(v), base64.StdEncoding.EncodeToString([]byte("ciuser:"+v)))
	}
	return out
}

// secretStore is one backend of the test: setup starts its server behind
// proxy, sets good credentials in env and files and returns the store
// URL; wrong sets wrong ones; inURL puts secrets in the URL itself.
type secretStore struct {
	name  string
	setup func(t *testing.T, p *faultproxy.Proxy) string
	wrong func(t *testing.T)
	inURL func(u string) string
}

func dockerConfig(t *testing.T, registry, pass string) {
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("ciuser:" + pass))
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, registry, auth)), 0o600)
	t.Setenv("DOCKER_CONFIG", dir)
}

// asClient opens raw directly and hands its SDK client to c (a pointer).
func asClient(t *testing.T, raw string, c any) {
	t.Helper()
	st, err := all.Mux().Open(context.Background(), raw, store.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := store.As[*store.ObjectStore](st)
	if !obj.Bucket().(*cloudblob.Bucket).Blob().As(c) {
		t.Fatalf("no %T behind %s", c, raw)
	}
}

func unsetEnv(t *testing.T, keys ...string) {
	for _, k := range keys {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

func secretStores() []secretStore {
	const bucket = "secrets"
	return []secretStore{
		{
			name: "file",
			setup: func(t *testing.T, _ *faultproxy.Proxy) string {
				return "file://" + filepath.Join(t.TempDir(), "store")
			},
			wrong: func(t *testing.T) {},
			inURL: func(u string) string { return u + "?X-Amz-Signature=" + secSignature + "&password=" + secURLPassword },
		},
		{
			name: "oci",
			setup: func(t *testing.T, p *faultproxy.Proxy) string {
				regAddr := testserver.Registry(t, "ciuser", secRegistry)
				p.SetTarget("http://" + regAddr)
				dockerConfig(t, p.Addr(), secRegistry)
				return "oci://" + p.Addr() + "/team/cache"
			},
			wrong: func(t *testing.T) {
				dockerConfig(t, os.Getenv("CACHE_TEST_PROXY"), secRegWrong)
			},
			inURL: func(u string) string {
				return strings.Replace(u, "oci://", "oci://ciuser:"+secURLPassword+"@", 1) + "?sig=" + secSignature
			},
		},
		{
			name: "s3",
			setup: func(t *testing.T, p *faultproxy.Proxy) string {
				endpoint := testserver.MinIO(t, "ciuser", secMinIO)
				p.SetTarget(endpoint)
				unsetEnv(t, "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
				dir := t.TempDir()
				os.WriteFile(filepath.Join(dir, "config"), nil, 0o600)
				os.WriteFile(filepath.Join(dir, "credentials"), []byte("[default]\naws_access_key_id = ciuser\naws_secret_access_key = "+secMinIO+"\n"), 0o600)
				t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
				t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
				unsetEnv(t, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
				q := "?endpoint=%s&use_path_style=true&disable_https=true&region=us-east-1"
				var c *s3.Client
				asClient(t, "s3://"+bucket+fmt.Sprintf(q, endpoint), &c)
				testserver.UntilMinIOReady(t, func() error {
					_, err := c.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(bucket)})
					return err
				})
				return "s3://" + bucket + "/p" + fmt.Sprintf(q, p.URL())
			},
			wrong: func(t *testing.T) {
				t.Setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONG")
				t.Setenv("AWS_SECRET_ACCESS_KEY", secAWSSecret)
				t.Setenv("AWS_SESSION_TOKEN", secAWSSession)
			},
			inURL: func(u string) string {
				u = strings.Replace(u, "endpoint=http://", "endpoint=http://ciuser:"+secURLPassword+"@", 1)
				return u + "&X-Amz-Signature=" + secSignature + "&X-Amz-Credential=" + secAWSSecret
			},
		},
		{
			name: "gcs",
			setup: func(t *testing.T, p *faultproxy.Proxy) string {
				host := testserver.FakeGCS(t, p.Addr())
				p.SetTarget("http://" + host)
				creds := filepath.Join(t.TempDir(), "sa.json")
				os.WriteFile(creds, []byte(`{"type":"service_account","project_id":"p","private_key_id":"k","private_key":"-----BEGIN PRIVATE KEY-----\n`+secGCSKey+`\n-----END PRIVATE KEY-----\n","client_email":"ci@p.iam.gserviceaccount.com","token_uri":"http://127.0.0.1:1/token"}`), 0o600)
				t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
				t.Setenv("STORAGE_EMULATOR_HOST", host)
				var c *storagev1.Service
				asClient(t, "gs://"+bucket, &c)
				if _, err := c.Buckets.Insert("test-project", &storagev1.Bucket{Name: bucket}).Context(t.Context()).Do(); err != nil {
					t.Fatalf("creating bucket: %v", err)
				}
				t.Setenv("STORAGE_EMULATOR_HOST", p.Addr())
				t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", creds)
				return "gs://" + bucket + "/p"
			},
			wrong: func(t *testing.T) {},
			inURL: func(u string) string {
				return u + "?X-Goog-Signature=" + secSignature + "&access_token=" + secURLPassword
			},
		},
		{
			name: "azure",
			setup: func(t *testing.T, p *faultproxy.Proxy) string {
				endpoint := testserver.Azurite(t)
				u, _ := url.Parse(endpoint)
				p.SetTarget("http://" + u.Host)
				unsetEnv(t, "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET")
				t.Setenv("AZURE_STORAGE_CONNECTION_STRING", testserver.AzuriteConnString(endpoint, testserver.AzuriteKey))
				var c *container.Client
				asClient(t, "azblob://"+bucket, &c)
				if _, err := c.Create(t.Context(), nil); err != nil {
					t.Fatalf("creating container: %v", err)
				}
				t.Setenv("AZURE_STORAGE_CONNECTION_STRING", testserver.AzuriteConnString(p.URL()+u.Path, testserver.AzuriteKey))
				return "azblob://" + bucket + "/p"
			},
			wrong: func(t *testing.T) {
				cs := os.Getenv("AZURE_STORAGE_CONNECTION_STRING")
				t.Setenv("AZURE_STORAGE_CONNECTION_STRING", strings.Replace(cs, testserver.AzuriteKey, secAzureKey, 1))
			},
			inURL: func(u string) string {
				return u + "?sv=2021-08-06&sp=rwdl&se=2030-01-01T00:00:00Z&sig=" + secSAS
			},
		},
	}
}

// TestNoSecretInOutput runs every command that takes a store (fetch,
// upload, key, list, delete, explain, and lint on a pipeline naming the
// store) against each store, with credentials in env, files and URLs,
// under wrong credentials, secrets in the URL, a 500, a stall and an
// unreachable store, and checks that no secret appears in stdout, stderr,
// the results files or the JSON line.
func TestNoSecretInOutput(t *testing.T) {
	if testing.Short() {
		t.Skip("starts every store's server")
	}
	secrets := allSecrets()
	for _, ss := range secretStores() {
		t.Run(ss.name, func(t *testing.T) {
			proxy := faultproxy.New(t, "")
			t.Setenv("CACHE_TEST_PROXY", proxy.Addr())
			base := ss.setup(t, proxy)
			wd, folder := workspace(t)
			type mode struct {
				name  string
				apply func(t *testing.T) string // returns the store URL to use
			}
			modes := []mode{
				{"ok", func(t *testing.T) string { return base }},
				{"wrong-credentials", func(t *testing.T) string { ss.wrong(t); return base }},
				{"secrets-in-url", func(t *testing.T) string { return ss.inURL(base) }},
				{"500", func(t *testing.T) string {
					proxy.Add(faultproxy.Rule{Fault: faultproxy.Status, Status: http.StatusInternalServerError, Times: -1})
					return base
				}},
				{"stall", func(t *testing.T) string {
					proxy.Add(faultproxy.Rule{Fault: faultproxy.Stall, Times: -1})
					return base
				}},
				{"unreachable", func(t *testing.T) string { proxy.Close(); return base }},
			}
			if ss.name == "file" { // no proxy: a store directory that is a file
				modes = append(modes[:3], mode{"not-a-directory", func(t *testing.T) string {
					f := filepath.Join(t.TempDir(), "notadir")
					os.WriteFile(f, []byte(secSignature), 0o600)
					return "file://" + f
				}})
			}
			for _, m := range modes {
				t.Run(m.name, func(t *testing.T) {
					proxy.Clear()
					storeURL := m.apply(t)
					for _, args := range secretCommands(t, storeURL, wd, folder, m.name == "ok") {
						outputs := []string{"text", "json"}
						if m.name == "500" || m.name == "stall" { // slow (retries until --timeout): the JSON run prints stderr's lines too
							outputs = outputs[1:]
						}
						for _, output := range outputs {
							res := filepath.Join(t.TempDir(), "results")
							full := append(append([]string{}, args...), "--output", output)
							if args[0] == "fetch" || args[0] == "upload" {
								full = append(full, "--results-dir", res)
							}
							r := cache(t, full...)
							checkNoSecret(t, strings.Join(full, " "), r, res, secrets)
							checkStatus(t, m.name, args[0], res)
						}
					}
				})
			}
		})
	}
}

// secretCommands are the command lines of the test for storeURL. A store
// that works gets limits no loaded machine reaches; the failing ones short
// limits, so that they fail fast.
func secretCommands(t *testing.T, storeURL, wd, folder string, works bool) [][]string {
	limits := []string{"--timeout", "1500ms", "--stall-timeout", "300ms"}
	idle := "1s"
	if works {
		limits, idle = []string{"--timeout", "2m", "--stall-timeout", "1m"}, "1m"
	}
	key := []string{"--store", storeURL, "--key", "go-{{hash}}", "--workingdir", wd}
	pipeline := filepath.Join(t.TempDir(), "pipeline.yaml")
	os.WriteFile(pipeline, []byte(`apiVersion: tekton.dev/v1
kind: Task
metadata: {name: build}
spec:
  steps:
    - name: cache-fetch
      ref: {name: cache-fetch}
      params:
        - {name: SOURCE, value: "`+storeURL+`/go-{{hash}}"}
        - {name: CACHE_PATH, value: /workspace/cache}
`), 0o644)
	return [][]string{
		append(append([]string{"upload", "--folder", folder, "--idle-timeout", idle}, key...), limits...),
		append(append([]string{"fetch", "--folder", folder, "--restore-keys", "go-", "--idle-timeout", idle}, key...), limits...),
		append([]string{"key", "--folder", folder}, key...),
		append([]string{"list", "--store", storeURL}, limits...),
		append([]string{"delete", "--store", storeURL, "--key", "go-none"}, limits...),
		append(append([]string{"explain", "--folder", folder}, key...), limits...),
		{"lint", pipeline},
	}
}

func checkNoSecret(t *testing.T, cmdline string, r run, resultsDir string, secrets []string) {
	t.Helper()
	outputs := map[string]string{"stdout": r.stdout, "stderr": r.stderr}
	entries, _ := os.ReadDir(resultsDir)
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(resultsDir, e.Name()))
		outputs["result "+e.Name()] = string(b)
	}
	for where, text := range outputs {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("cache %s: %s holds the secret %q:\n%s", cmdline, where, s, text)
			}
		}
	}
}

// checkStatus makes sure each mode did what it says: the good credentials
// save and restore, a 500, a stall or an unreachable store fail.
func checkStatus(t *testing.T, mode, command, resultsDir string) {
	t.Helper()
	if command != "fetch" && command != "upload" {
		return
	}
	b, err := os.ReadFile(filepath.Join(resultsDir, "status"))
	if err != nil {
		t.Fatalf("%s: no status result: %v", command, err)
	}
	status := string(b)
	switch mode {
	case "ok":
		if status != "saved" && status != "skipped" && status != "hit" {
			t.Errorf("%s with good credentials: status %s: the test's store does not work", command, status)
		}
	case "500", "stall", "unreachable", "not-a-directory":
		if status != "error" {
			t.Errorf("%s under %s: status %s, want error: the fault did not reach the command", command, mode, status)
		}
	}
}

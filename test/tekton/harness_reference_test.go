package tekton

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"

	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// referenceTask is a Task written the way openshift-pipelines/tekton-caches'
// README and examples write theirs: SOURCE/TARGET built from a "registry"
// param as $(params.registry)/cache-go:{{hash}}, its glob dialect in
// PATTERNS, INSECURE as a string, credentials through its params, FETCHED
// from the fetch step. Only the StepAction refs point at ours.
const referenceTask = `apiVersion: tekton.dev/v1
kind: Task
metadata: {name: reference-form}
spec:
  params:
    - {name: registry, type: string}
    - {name: cacheName, type: string}
    - {name: cachePatterns, type: array}
    - {name: buildCommand, type: string}
    - {name: blobQueryParams, type: string, default: ""}
    - {name: awsCredentials, type: string, default: ""}
  workspaces:
    - name: source
  stepTemplate:
    env:
      - {name: GOCACHE, value: $(workspaces.source.path)/cache/go-build}
      - {name: GOMODCACHE, value: $(workspaces.source.path)/cache/mod}
      - {name: npm_config_cache, value: $(workspaces.source.path)/cache/npm}
  steps:
    - name: cache-fetch
      ref: {name: cache-fetch}
      params:
        - {name: PATTERNS, value: ["$(params.cachePatterns[*])"]}
        - {name: SOURCE, value: "$(params.registry)/$(params.cacheName):{{hash}}"}
        - {name: CACHE_PATH, value: $(workspaces.source.path)/cache}
        - {name: WORKING_DIR, value: $(workspaces.source.path)}
        - {name: INSECURE, value: "true"}
        - {name: BLOB_QUERY_PARAMS, value: $(params.blobQueryParams)}
        - {name: AWS_SHARED_CREDENTIALS_FILE, value: $(params.awsCredentials)}
    - name: build
      image: busybox
      workingDir: $(workspaces.source.path)
      script: $(params.buildCommand)
    - name: cache-upload
      ref: {name: cache-upload}
      params:
        - {name: PATTERNS, value: ["$(params.cachePatterns[*])"]}
        - {name: TARGET, value: "$(params.registry)/$(params.cacheName):{{hash}}"}
        - {name: CACHE_PATH, value: $(workspaces.source.path)/cache}
        - {name: WORKING_DIR, value: $(workspaces.source.path)}
        - {name: INSECURE, value: "true"}
        - {name: FETCHED, value: $(steps.cache-fetch.results.fetched)}
        - {name: FORCE_CACHE_UPLOAD, value: "false"}
        - {name: BLOB_QUERY_PARAMS, value: $(params.blobQueryParams)}
        - {name: AWS_SHARED_CREDENTIALS_FILE, value: $(params.awsCredentials)}
`

// TestReferenceForms runs Go and Node pipelines in the reference tool's
// forms against real MinIO (s3://), fake-gcs-server (gs://) and a registry
// (oci://), twice each: the first run misses and saves, the second hits.
func TestReferenceForms(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MinIO, fake-gcs-server and a registry")
	}
	h := newHarness(t)
	// No cloud metadata server, no developer credentials: loopback only.
	h.Env = append(h.Env, "AWS_EC2_METADATA_DISABLED=true", "GCE_METADATA_HOST=127.0.0.1:1",
		"CLOUDSDK_CONFIG="+t.TempDir(), "AWS_CONFIG_FILE="+emptyFile(t))

	minio := startMinIO(t)
	gcs := startFakeGCS(t)
	h.Env = append(h.Env, "STORAGE_EMULATOR_HOST="+gcs)
	reg := testserver.Registry(t, "", "")
	creds := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(creds, []byte(fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", minio.User, minio.Secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	task := decodeTask(t, referenceTask)
	goBuild, npmBuild := absTestdata(t, "fake-go-build.sh"), absTestdata(t, "fake-npm-build.sh")

	stores := []struct {
		name, registry, query, creds string
		mapped                       bool // the key cache-go:HASH is mapped to cache-go-HASH
	}{
		{"s3", "s3://tekton-caches", "?endpoint=" + minio.Endpoint + "&use_path_style=true&disable_https=true&region=us-east-1", creds, true},
		{"gs", "gs://tekton-caches", "", "", true},
		{"oci", "oci://" + reg + "/tekton-caches", "", "", false},
	}
	langs := []struct {
		name, cacheName string
		patterns        []string
		build, hitLine  string
		files           map[string]string
	}{
		{"go", "cache-go", []string{"**go.mod", "**go.sum"}, "sh " + goBuild, "0 cache entries built, 0 module downloaded",
			map[string]string{"go.mod": "module example.com/x\n", "go.sum": "example.com/dep v1.0.0 h1:AAAA=\n", "tools/go.mod": "module tools\n"}},
		{"node", "cache-npm", []string{"**/workspace/source/package.json", "**/workspace/source/package-lock.json", "!**/node_modules"}, "sh " + npmBuild, "fake npm ci: cache hit",
			map[string]string{"package.json": `{"name":"x"}`, "package-lock.json": `{"lockfileVersion":3}`}},
	}
	for _, st := range stores {
		for _, lang := range langs {
			t.Run(st.name+"-"+lang.name, func(t *testing.T) {
				params := v1.Params{
					stringParam("registry", st.registry),
					stringParam("cacheName", lang.cacheName),
					arrayParam("cachePatterns", lang.patterns...),
					stringParam("buildCommand", lang.build),
					stringParam("blobQueryParams", st.query),
					stringParam("awsCredentials", st.creds),
				}
				run := func(name string) *TaskRunResult {
					t.Helper()
					dir := filepath.Join(t.TempDir(), name)
					source := filepath.Join(dir, "workspace", "source") // a fresh emptyDir per run
					for rel, content := range lang.files {
						p := filepath.Join(source, rel)
						if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
							t.Fatal(err)
						}
						if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
							t.Fatal(err)
						}
					}
					res, err := h.Run(context.Background(), dir, TaskRunInput{Spec: &task.Spec, Params: params, Workspaces: map[string]string{"source": source}})
					if err != nil {
						t.Fatalf("%s run: %v", name, err)
					}
					return res
				}
				first := run("first")
				fetch, upload := first.Step("cache-fetch"), first.Step("cache-upload")
				key := fetch.Results["key"]
				if fetch.Results["status"] != "miss" || upload.Results["status"] != "saved" || upload.Results["key"] != key {
					t.Fatalf("first run: fetch %v, upload %v\n%s\n%s", fetch.Results, upload.Results, fetch.Output, upload.Output)
				}
				if st.mapped && (!strings.HasPrefix(key, lang.cacheName+"-") || !strings.Contains(fetch.Output, "is not valid in every store: using")) {
					t.Errorf("key %q: want %s:HASH mapped to %s-HASH, and the log saying so:\n%s", key, lang.cacheName, lang.cacheName, fetch.Output)
				}
				second := run("second")
				fetch, upload = second.Step("cache-fetch"), second.Step("cache-upload")
				if fetch.Results["status"] != "hit" || fetch.Results["fetched"] != "true" || fetch.Results["matched-key"] != key {
					t.Fatalf("second run did not hit: %v\n%s", fetch.Results, fetch.Output)
				}
				if upload.Results["uploaded"] != "false" || upload.Results["status"] != "skipped" {
					t.Errorf("second upload: %v", upload.Results)
				}
				if !strings.Contains(second.Step("build").Output, lang.hitLine) {
					t.Errorf("the second build did not find its cache:\n%s", second.Step("build").Output)
				}
				if fetch.Results["store"] == "" || strings.Contains(fetch.Results["store"], minio.Secret) {
					t.Errorf("store result %q", fetch.Results["store"])
				}
			})
		}
	}
}

func emptyFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// minioServer is a running MinIO and its root credentials.
type minioServer struct{ Endpoint, User, Secret string }

// startMinIO starts MinIO with the bucket tekton-caches (the reference
// examples' bucket name).
func startMinIO(t *testing.T) minioServer {
	s := minioServer{User: "tcminioadmin", Secret: "tc-minio-secret-8d2f"}
	s.Endpoint = testserver.MinIO(t, s.User, s.Secret)
	// Create the bucket: a signed PUT /bucket. MinIO may answer 503 for a
	// moment after it says it is ready.
	sum := sha256.Sum256(nil)
	hash := hex.EncodeToString(sum[:])
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequest(http.MethodPut, s.Endpoint+"/tekton-caches", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Amz-Content-Sha256", hash)
		if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: s.User, SecretAccessKey: s.Secret}, req, hash, "s3", "us-east-1", time.Now()); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if resp.StatusCode != http.StatusServiceUnavailable || attempt == 50 {
			t.Fatalf("creating the bucket: %s", resp.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return s
}

// startFakeGCS starts fake-gcs-server with the bucket tekton-caches, and
// returns host:port.
func startFakeGCS(t *testing.T) string {
	host := testserver.FakeGCS(t, "")
	resp, err := http.Post("http://"+host+"/storage/v1/b?project=test", "application/json", bytes.NewReader([]byte(`{"name":"tekton-caches"}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("creating the bucket: %s", resp.Status)
	}
	return host
}

// TestStepActionMisconfigurationFailsTheStep is review D1 in a Task: an
// unknown scheme, a malformed URI, a pattern that matches nothing or a
// working dir that does not exist ran green and cold forever. Now the step
// fails (exit 2) whatever STRICT says, with status=error and a one-line
// error in the results. A timeout (TIMEOUT) stays a warning that names it.
func TestStepActionMisconfigurationFailsTheStep(t *testing.T) {
	h := newHarness(t)
	task := decodeTask(t, `apiVersion: tekton.dev/v1
kind: Task
metadata: {name: misconfigured}
spec:
  params:
    - {name: store, type: string}
    - {name: workdir, type: string}
    - {name: patterns, type: array}
    - {name: timeout, type: string, default: ""}
  workspaces:
    - name: source
  steps:
    - name: cache-fetch
      ref: {name: cache-fetch}
      params:
        - {name: SOURCE, value: "$(params.store)"}
        - {name: PATTERNS, value: ["$(params.patterns[*])"]}
        - {name: CACHE_PATH, value: $(workspaces.source.path)/cache}
        - {name: WORKING_DIR, value: $(params.workdir)}
        - {name: TIMEOUT, value: $(params.timeout)}
`)
	good := "file://" + t.TempDir() + "/go-{{hash}}"
	for _, tc := range []struct {
		name, store, workdir, pattern, want string
	}{
		{"unknown scheme", "foo://x/go-{{hash}}", "", "go.sum", `unknown scheme "foo"`},
		{"malformed URI", "s3:/ci-cache/go-{{hash}}", "", "go.sum", "no bucket"},
		{"no match", good, "", "**/workspace/source/package.json", "no file matches"},
		{"working dir", good, "/nonexistent", "go.sum", "is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			source := freshSource(t, "go-project")
			wd := tc.workdir
			if wd == "" {
				wd = source
			}
			res, err := h.Run(context.Background(), t.TempDir(), TaskRunInput{
				Spec:       &task.Spec,
				Params:     v1.Params{stringParam("store", tc.store), stringParam("workdir", wd), arrayParam("patterns", tc.pattern)},
				Workspaces: map[string]string{"source": source},
			})
			step := res.Step("cache-fetch")
			if err == nil || step.ExitCode != 2 {
				t.Fatalf("want the step to fail with exit 2: err %v, exit %d\n%s", err, step.ExitCode, step.Output)
			}
			if step.Results["status"] != "error" || !strings.Contains(step.Results["error"], tc.want) || strings.Contains(step.Results["error"], "\n") {
				t.Errorf("results %v: want status error and a one-line error with %q", step.Results, tc.want)
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		l := blackHole(t)
		source := freshSource(t, "go-project")
		res, err := h.Run(context.Background(), t.TempDir(), TaskRunInput{
			Spec: &task.Spec,
			Params: v1.Params{stringParam("store", "oci://"+l+"/cache:go-{{hash}}"), stringParam("workdir", source),
				arrayParam("patterns", "go.sum"), stringParam("timeout", "1s")},
			Workspaces: map[string]string{"source": source},
		})
		if err != nil {
			t.Fatalf("a timeout failed the Task: %v", err)
		}
		step := res.Step("cache-fetch")
		if step.Results["status"] != "error" || !strings.Contains(step.Output, "gave up after 1s") || step.Results["seconds"] < "1" {
			t.Errorf("timeout: results %v\n%s", step.Results, step.Output)
		}
	})
}

// blackHole listens on loopback, accepts connections and never answers.
func blackHole(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return l.Addr().String()
}

func arrayParam(name string, values ...string) v1.Param {
	return v1.Param{Name: name, Value: v1.ParamValue{Type: v1.ParamTypeArray, ArrayVal: values}}
}

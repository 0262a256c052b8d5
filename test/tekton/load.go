package tekton

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	tektonscheme "github.com/tektoncd/pipeline/pkg/client/clientset/versioned/scheme"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kubescheme "k8s.io/client-go/kubernetes/scheme"
)

// Object is one document of a YAML file, decoded into Tekton's Go type.
type Object struct {
	Path  string // file it came from
	Index int    // position of the document in the file, from 0
	Raw   []byte // the document as written
	Obj   runtime.Object
}

// String names the document for messages: path#index (Kind/name).
func (o Object) String() string {
	kind, name := "", ""
	if o.Obj != nil {
		kind = o.Obj.GetObjectKind().GroupVersionKind().Kind
		if m, ok := o.Obj.(interface {
			GetName() string
			GetGenerateName() string
		}); ok {
			name = m.GetName()
			if name == "" {
				name = m.GetGenerateName() + "*"
			}
		}
	}
	return fmt.Sprintf("%s#%d (%s/%s)", o.Path, o.Index, kind, name)
}

// Scheme knows Tekton's kinds and Kubernetes' built-in ones (the
// PersistentVolumeClaim an example ships with).
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{tektonscheme.AddToScheme, kubescheme.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strictDecoder rejects unknown and duplicate fields, as `kubectl apply
// --validate=strict` and the API server's field validation do.
var strictDecoder = serializer.NewCodecFactory(Scheme, serializer.EnableStrict).UniversalDeserializer()

// Decode decodes every document of a YAML stream strictly with Tekton's
// scheme. Empty documents are skipped; a kind the scheme does not know is an
// error.
func Decode(path string, r io.Reader) ([]Object, error) {
	var out []Object
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for i := 0; ; i++ {
		doc, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s#%d: %w", path, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			i--
			continue
		}
		obj, _, err := strictDecoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("decoding %s#%d: %w", path, i, err)
		}
		out = append(out, Object{Path: path, Index: i, Raw: doc, Obj: obj})
	}
}

// LoadFile decodes every document of a file.
func LoadFile(path string) ([]Object, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Decode(path, f)
}

// YAMLFiles lists the .yaml/.yml files under dirs, recursively, in lexical
// order, except kustomization files (kustomize's input, not Tekton's).
func YAMLFiles(dirs ...string) ([]string, error) {
	var files []string
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			ext := filepath.Ext(p)
			if (ext == ".yaml" || ext == ".yml") && !strings.HasPrefix(d.Name(), "kustomization.") {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// MarkdownObjects decodes the ```yaml blocks of a Markdown file that hold
// whole objects (their first line that is not a comment starts with
// apiVersion:); fragments (a list of steps ...) are skipped. A missing file
// has none.
func MarkdownObjects(path string) ([]Object, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Object
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```yaml" {
			continue
		}
		start := i + 1
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
		}
		block := strings.Join(lines[start:i], "\n")
		first := strings.TrimSpace(string(stripComments([]byte(block))))
		if !strings.HasPrefix(first, "apiVersion:") {
			continue
		}
		objs, err := Decode(fmt.Sprintf("%s:%d", path, start), strings.NewReader(block))
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

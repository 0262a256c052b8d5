package oci

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// DockerConfigSecretFile is the file a kubernetes.io/dockerconfigjson
// secret mounts: the same JSON as config.json ({"auths": {...}}).
const DockerConfigSecretFile = ".dockerconfigjson"

// keychain returns the keychain for the environment and a description of
// where credentials come from, for error messages (never a secret).
//
//   - DOCKER_CONFIG unset: authn.DefaultKeychain (~/.docker/config.json,
//     credential helpers, podman's auth.json).
//   - DOCKER_CONFIG is a directory with config.json: authn.DefaultKeychain,
//     which reads it.
//   - DOCKER_CONFIG is a directory with .dockerconfigjson and no config.json
//     (a mounted secret, as openshift-pipelines/tekton-caches accepts): that
//     file first, then authn.DefaultKeychain.
//   - DOCKER_CONFIG is a file: that file first, then authn.DefaultKeychain.
func keychain(logf func(string, ...any)) (authn.Keychain, string, error) {
	dc := os.Getenv("DOCKER_CONFIG")
	if dc == "" {
		home, _ := os.UserHomeDir()
		if home != "" && fileExists(filepath.Join(home, ".docker", "config.json")) {
			return authn.DefaultKeychain, "~/.docker/config.json", nil
		}
		return authn.DefaultKeychain, "no docker config: set DOCKER_CONFIG or run docker login", nil
	}
	fi, err := os.Stat(dc)
	switch {
	case err != nil:
		logf("oci: DOCKER_CONFIG=%s: %v; trying ~/.docker/config.json", dc, err)
		return authn.DefaultKeychain, fmt.Sprintf("DOCKER_CONFIG=%s does not exist", dc), nil
	case !fi.IsDir():
		return fileKeychain(dc, "DOCKER_CONFIG="+dc)
	case fileExists(filepath.Join(dc, "config.json")):
		return authn.DefaultKeychain, "DOCKER_CONFIG=" + filepath.Join(dc, "config.json"), nil
	case fileExists(filepath.Join(dc, DockerConfigSecretFile)):
		return fileKeychain(filepath.Join(dc, DockerConfigSecretFile), "DOCKER_CONFIG="+filepath.Join(dc, DockerConfigSecretFile))
	default:
		logf("oci: DOCKER_CONFIG=%s holds neither config.json nor %s; trying ~/.docker/config.json", dc, DockerConfigSecretFile)
		return authn.DefaultKeychain, fmt.Sprintf("DOCKER_CONFIG=%s holds neither config.json nor %s", dc, DockerConfigSecretFile), nil
	}
}

// fileKeychain reads credentials from a docker config file (config.json or
// a secret's .dockerconfigjson), then falls back to authn.DefaultKeychain.
func fileKeychain(path, desc string) (authn.Keychain, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("reading registry credentials: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, "", fmt.Errorf("reading registry credentials from %s: %s", path, storeerr.OneLine(err.Error()))
	}
	return authn.NewMultiKeychain(configKeychain{cf}, authn.DefaultKeychain), desc, nil
}

// configKeychain resolves credentials from a loaded docker config the way
// authn.DefaultKeychain does (repository first, then registry).
type configKeychain struct{ cf *configfile.ConfigFile }

// Resolve implements authn.Keychain.
func (k configKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	var empty types.AuthConfig
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		cfg, err := k.cf.GetAuthConfig(key)
		if err != nil {
			return nil, err
		}
		cfg.ServerAddress = ""
		if cfg != empty {
			return authn.FromConfig(authn.AuthConfig{
				Username:      cfg.Username,
				Password:      cfg.Password,
				Auth:          cfg.Auth,
				IdentityToken: cfg.IdentityToken,
				RegistryToken: cfg.RegistryToken,
			}), nil
		}
	}
	return authn.Anonymous, nil
}

// resolveAuth finds the credentials for repo.
func resolveAuth(ctx context.Context, kc authn.Keychain, repo name.Repository, desc string) (authn.Authenticator, string, error) {
	auth, err := authn.Resolve(ctx, kc, repo)
	if err != nil {
		return nil, "", fmt.Errorf("oci://%s: reading registry credentials (%s): %s", repo.Name(), desc, storeerr.OneLine(err.Error()))
	}
	if auth == authn.Anonymous {
		desc += "; none for " + repo.RegistryStr() + " there"
	}
	return auth, desc, nil
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

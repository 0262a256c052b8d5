package oci

import "github.com/google/go-containerregistry/pkg/authn"

// Keychain is the keychain the OCI store uses (DOCKER_CONFIG as a
// directory, a file or a mounted .dockerconfigjson secret, then
// authn.DefaultKeychain), for `cache bake`, which pushes images with the
// same credentials.
func Keychain(logf func(string, ...any)) (authn.Keychain, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	kc, _, err := keychain(logf)
	return kc, err
}

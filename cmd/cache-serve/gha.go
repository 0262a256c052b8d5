package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/server/gha"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// mountGHA mounts the GitHub Actions cache on srv unless --gha=false, and
// returns the loop that expires its unfinished uploads (nil: none).
func mountGHA(st store.Store, srv *server.Server, o options, logf func(string, ...any)) (func(context.Context), error) {
	if !o.gha {
		return nil, nil
	}
	if o.ghaTokenTTL <= 0 || o.ghaReservation <= 0 {
		return nil, usageError{errors.New("--gha-token-ttl and --gha-reservation-ttl must be positive")}
	}
	key, err := signingKey(o.ghaKeyFile, logf)
	if err != nil {
		return nil, err
	}
	if _, ok := store.As[store.Deleter](st); !ok {
		logf("warning: the GitHub Actions cache is off: %s cannot delete (finished uploads' parts)", st)
		return nil, nil
	}
	svc, err := gha.NewService(st, gha.ServiceOptions{MaxSize: o.maxBodySize, ReservationTTL: o.ghaReservation, Logf: logf})
	if err != nil {
		return nil, err
	}
	h, err := gha.New(svc, gha.Options{
		SigningKey:    key,
		TokenTTL:      o.ghaTokenTTL,
		Authenticate:  srv.Authenticate,
		RecordUse:     srv.RecordUse,
		ObserveLookup: srv.ObserveGHALookup,
		BaseURL:       o.ghaURL,
		Logf:          logf,
	})
	if err != nil {
		return nil, usageError{err}
	}
	h.Register(srv)
	logf("serving the GitHub Actions cache: v1 at %s, v2 at %s, runtime tokens at POST /v1/gha/token", gha.V1Path, gha.TwirpPath)
	every := min(o.ghaReservation/4, 15*time.Minute)
	return func(ctx context.Context) {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if _, err := svc.Expire(ctx); err != nil && ctx.Err() == nil {
				logf("warning: gha: expiring unfinished uploads: %v (next try in %s)", err, every)
			}
		}
	}, nil
}

// signingKey reads --gha-signing-key-file (its bytes, surrounding space
// trimmed), or makes a random key for this process.
func signingKey(file string, logf func(string, ...any)) ([]byte, error) {
	if file == "" {
		key := make([]byte, 32)
		rand.Read(key)
		logf("warning: no --gha-signing-key-file: a random key signs the GHA runtime tokens, so they are good on this replica only and until it restarts")
		return key, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, usageError{fmt.Errorf("--gha-signing-key-file: %w", err)}
	}
	key := bytes.TrimSpace(data)
	if len(key) < 32 {
		return nil, usageError{fmt.Errorf("--gha-signing-key-file %s holds %d bytes: use at least 32 (head -c 48 /dev/urandom | base64 > FILE)", file, len(key))}
	}
	return key, nil
}

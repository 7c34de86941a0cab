// Package testkit holds the helpers every test of this module shares: a
// real redis-server per test on a free port, an embedded miniredis, a
// worker, and the assertions on keys and TTLs that every test ends with.
package testkit

import (
	"context"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/internal/redisproc"
)

// StartRedis starts a redis-server owned by the test, on a free loopback
// port with its own directory, no persistence unless args say otherwise,
// and noeviction. It is killed when the test ends. The test fails if
// redis-server is missing (`make test` installs it).
func StartRedis(t testing.TB, args ...string) *Server {
	t.Helper()
	s, err := redisproc.Start(t.TempDir(), args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return &Server{Server: s}
}

// Server is a redis-server process owned by one test.
type Server struct{ *redisproc.Server }

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := s.Server.Client()
	t.Cleanup(func() { c.Close() })
	return c
}

// Restart restarts the server on the same port, failing the test if it
// does not come back.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.Server.Restart(); err != nil {
		t.Fatal(err)
	}
}

// Mini starts a miniredis and returns it with a client, both closed when
// the test ends.
func Mini(t testing.TB) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { c.Close() })
	return m, c
}

// ExportKeys returns every export:* key.
func ExportKeys(t testing.TB, rdb redis.UniversalClient) []string {
	t.Helper()
	keys, err := rdb.Keys(context.Background(), "export:*").Result()
	if err != nil {
		t.Fatalf("listing export keys: %v", err)
	}
	return keys
}

// AssertTTLs fails the test unless every export:* key has a TTL > 0.
func AssertTTLs(t testing.TB, rdb redis.UniversalClient) {
	t.Helper()
	for _, k := range ExportKeys(t, rdb) {
		ttl, err := rdb.PTTL(context.Background(), k).Result()
		if err != nil {
			t.Fatalf("PTTL %s: %v", k, err)
		}
		if ttl <= 0 {
			t.Errorf("key %s has no TTL (PTTL %v)", k, ttl)
		}
	}
}

// AssertNoKeys fails the test if any export:* key exists.
func AssertNoKeys(t testing.TB, rdb redis.UniversalClient) {
	t.Helper()
	if keys := ExportKeys(t, rdb); len(keys) > 0 {
		t.Errorf("want no export keys, found %s", strings.Join(keys, ", "))
	}
}

// Package testkit holds the helpers every test of this module shares: a
// real redis-server per test on a free port, an embedded miniredis, a
// worker, and the assertions on keys and TTLs that every test ends with.
package testkit

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process owned by one test.
type Server struct {
	t    testing.TB
	Addr string
	Dir  string
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// StartRedis starts redis-server on a free loopback port with its own
// directory, no persistence unless args say otherwise, and noeviction. It
// is stopped when the test ends. The test fails if redis-server is missing
// (`make test` installs it).
func StartRedis(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found: run `make test`, which installs it, or `apt-get install redis-server`")
	}
	s := &Server{t: t, Dir: t.TempDir(), args: args}
	s.Addr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// FreePort returns a TCP port free on loopback at the time of the call.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *Server) start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	args := append([]string{"--port", port, "--bind", "127.0.0.1", "--dir", s.Dir,
		"--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
		"--logfile", filepath.Join(s.Dir, "redis.log")}, s.args...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := redis.NewClient(&redis.Options{Addr: s.Addr})
		err := c.Ping(context.Background()).Err()
		c.Close()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			s.t.Fatalf("redis-server on %s did not answer: %v\n%s", s.Addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: a test server keeps nothing it has not
// already written) and waits for it.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// Restart kills the server and starts it again on the same port and
// directory; with AOF on, it reloads what it acknowledged.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { c.Close() })
	return c
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

// LogLines returns the lines of the server's log, for failure messages.
func (s *Server) LogLines() []string {
	f, err := os.Open(filepath.Join(s.Dir, "redis.log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

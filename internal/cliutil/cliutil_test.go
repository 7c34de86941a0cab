package cliutil

import (
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestParseBytes(t *testing.T) {
	good := map[string]int64{
		"0": 0, "102400": 102400, "100KiB": 100 << 10, "100kib": 100 << 10, "1MiB": 1 << 20,
		"2 MiB": 2 << 20, "1GiB": 1 << 30, "4K": 4096, "3M": 3 << 20, "5B": 5, "7KB": 7 << 10,
	}
	for in, want := range good {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "fast", "KiB", "10X", "99999999999GiB"} {
		if got, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) = %d, want an error", in, got)
		}
	}
}

func TestRedisURLNeverShowsPassword(t *testing.T) {
	for _, u := range []string{
		"redis://:hunter2@host:port/0", "http://:hunter2@host/0", "redis://u:hunter2@host/x",
		"redis://:hunter2@[::1/0", "redis://:hunter2@h/0?dial_timeout=soon",
	} {
		_, err := ParseRedisURL(u)
		if err == nil {
			t.Errorf("ParseRedisURL(%q) accepted it", u)
			continue
		}
		if !errors.Is(err, ErrUsage) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseRedisURL(%q) = %q: want a usage error without the password", u, err)
		}
	}
	if got := RedactURL("rediss://user:hunter2@h:6380/2"); got != "rediss://user:xxxxx@h:6380/2" {
		t.Errorf("RedactURL = %q", got)
	}
	if got := RedactURL("redis://h:6379/0"); got != "redis://h:6379/0" {
		t.Errorf("RedactURL without password = %q", got)
	}
	opt, err := ParseRedisURL("rediss://:pw@h:6380/3")
	if err != nil || opt.Addr != "h:6380" || opt.DB != 3 || opt.Password != "pw" || opt.TLSConfig == nil {
		t.Errorf("ParseRedisURL(rediss) = %+v, %v", opt, err)
	}
}

func TestApplyEnv(t *testing.T) {
	newFS := func() (*flag.FlagSet, *string, *time.Duration) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		return fs, fs.String("redis", "default", ""), fs.Duration("ttl", time.Hour, "")
	}
	env := map[string]string{"redis": "T_REDIS", "ttl": "T_TTL"}

	t.Setenv("T_REDIS", "from-env")
	t.Setenv("T_TTL", "")
	fs, r, ttl := newFS()
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := ApplyEnv(fs, env); err != nil || *r != "from-env" || *ttl != time.Hour {
		t.Errorf("env only: redis %q ttl %v err %v", *r, *ttl, err)
	}

	fs, r, _ = newFS()
	if err := fs.Parse([]string{"--redis", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if err := ApplyEnv(fs, env); err != nil || *r != "from-flag" {
		t.Errorf("flag and env: redis %q err %v; the flag must win", *r, err)
	}

	t.Setenv("T_TTL", "soon")
	fs, _, _ = newFS()
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := ApplyEnv(fs, env); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "$T_TTL") {
		t.Errorf("bad env value: %v, want a usage error naming $T_TTL", err)
	}
}

func TestOneLine(t *testing.T) {
	if got := OneLine("a\nb\r\n  c\t d "); got != "a b c d" {
		t.Errorf("OneLine = %q", got)
	}
}

func TestQuoteArgHidesPasswords(t *testing.T) {
	for in, want := range map[string]string{
		"extra":                               `"extra"`,
		"--redis=redis://:s3cret@host:6379/0": `"--redis=redis://:xxxxx@host:6379/0"`,
		"redis://user:s3cret@host":            `"redis://user:xxxxx@host"`,
		"rediss://host:6380":                  `"rediss://host:6380"`,
		"user@host":                           "(an argument not shown: it may hold a password)",
	} {
		if got := QuoteArg(in); got != want {
			t.Errorf("QuoteArg(%q) = %s, want %s", in, got, want)
		}
	}
}

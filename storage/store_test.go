package storage_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/storage"
)

var ctx = context.Background()

// staged creates a sealed export of the given chunks and returns its id.
func staged(t *testing.T, s *storage.Store, chunks ...string) string {
	t.Helper()
	rec := &storage.Record{ID: uuid.NewString(), Owner: "alice", Queue: "q", ChunkSize: 4, TotalChunks: int64(len(chunks))}
	var bs [][]byte
	for _, c := range chunks {
		bs = append(bs, []byte(c))
		rec.TotalBytes += int64(len(c))
	}
	if err := s.CreateSealed(ctx, rec, bs); err != nil {
		t.Fatal(err)
	}
	return rec.ID
}

func data(t *testing.T, rdb redis.UniversalClient, id string) string {
	t.Helper()
	v, err := rdb.LRange(ctx, storage.KeysFor(id).Data, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(v, "")
}

func TestValidIDAcceptsOnlyCanonicalLowercaseUUIDs(t *testing.T) {
	good := uuid.NewString()
	if !storage.ValidID(good) {
		t.Fatalf("%s rejected", good)
	}
	for _, bad := range []string{"", strings.ToUpper(good), "{" + good + "}", "urn:uuid:" + good,
		strings.ReplaceAll(good, "-", ""), good + "\n", "../" + good[3:], good[:35] + "g"} {
		if storage.ValidID(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestKeysShareOneClusterSlot(t *testing.T) {
	k := storage.KeysFor("0b6f3c4e-9f1a-4d2b-8c3e-5a7d9e1f2b3c")
	want := storage.Keys{
		Status: "export:{0b6f3c4e-9f1a-4d2b-8c3e-5a7d9e1f2b3c}",
		Source: "export:{0b6f3c4e-9f1a-4d2b-8c3e-5a7d9e1f2b3c}-source",
		Data:   "export:{0b6f3c4e-9f1a-4d2b-8c3e-5a7d9e1f2b3c}-data",
	}
	if k != want {
		t.Fatalf("keys = %+v, want %+v", k, want)
	}
}

func TestAClaimResumesAtTheFirstChunkNotAppended(t *testing.T) {
	_, rdb := testkit.Mini(t)
	s := storage.New(rdb)
	id := staged(t, s, "aaaa", "bbbb", "cccc", "dddd", "ee")

	first, err := s.Claim(ctx, id, 8) // claims and moves two chunks
	if err != nil || first.Fence != 1 || first.Chunks != 2 || first.Bytes != 8 || first.Complete {
		t.Fatalf("first claim: %+v, %v", first, err)
	}
	// The attempt dies here. A retry claims again, with a newer token, and
	// starts where the first stopped.
	second, err := s.Claim(ctx, id, 4)
	if err != nil || second.Fence != 2 || second.Chunks != 3 || second.Bytes != 12 {
		t.Fatalf("second claim: %+v, %v", second, err)
	}
	// The first attempt comes back: fenced out, nothing written.
	if _, err := s.Append(ctx, id, first.Fence, first.Chunks, 100); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("stale append: err = %v, want ErrFenced", err)
	}
	// A stale index is refused too.
	if _, err := s.Append(ctx, id, second.Fence, 1, 100); err == nil || !strings.Contains(err.Error(), "stale") {
		t.Fatalf("append with a stale index: err = %v", err)
	}
	end, err := s.Append(ctx, id, second.Fence, second.Chunks, 100)
	if err != nil || !end.Complete || end.Chunks != 5 || end.Bytes != 18 {
		t.Fatalf("last append: %+v, %v", end, err)
	}
	if got := data(t, rdb, id); got != "aaaabbbbccccddddee" {
		t.Fatalf("data = %q: a chunk was lost or doubled", got)
	}
	rec, _ := s.Get(ctx, id)
	if rec.State != storage.Complete || rec.Attempts != 2 || rec.FinishedAt.IsZero() {
		t.Fatalf("record after completion: %+v", rec)
	}
	if n := rdb.Exists(ctx, storage.KeysFor(id).Source).Val(); n != 0 {
		t.Fatal("staged source kept after COMPLETE")
	}
	for _, k := range []string{storage.KeysFor(id).Status, storage.KeysFor(id).Data} {
		if ttl := rdb.PTTL(ctx, k).Val(); ttl != storage.DefaultRetentionTTL {
			t.Fatalf("%s TTL = %v, want the retention TTL", k, ttl)
		}
	}
}

func TestNothingAppendsAfterACancel(t *testing.T) {
	_, rdb := testkit.Mini(t)
	s := storage.New(rdb, storage.WithRetentionTTL(10*time.Minute))
	id := staged(t, s, "aaaa", "bbbb", "cccc")
	p, err := s.Claim(ctx, id, 4)
	if err != nil {
		t.Fatal(err)
	}
	prev, _, err := s.Cancel(ctx, id)
	if err != nil || prev != storage.Pending {
		t.Fatalf("cancel: %s, %v", prev, err)
	}
	_, err = s.Append(ctx, id, p.Fence, p.Chunks, 100)
	if st, ok := storage.IsState(err); !ok || st != storage.Cancelled {
		t.Fatalf("append after cancel: err = %v, want a CANCELLED StateError", err)
	}
	if _, err := s.Claim(ctx, id, 4); err == nil {
		t.Fatal("a cancelled export was claimed again")
	}
	if err := s.Fail(ctx, id, 0, "late"); err == nil {
		t.Fatal("a cancelled export was failed")
	}
	k := storage.KeysFor(id)
	if n := rdb.Exists(ctx, k.Source, k.Data).Val(); n != 0 {
		t.Fatalf("%d of source and data survive the cancel", n)
	}
	rec, _ := s.Get(ctx, id)
	if rec.State != storage.Cancelled || rec.Bytes != 4 || rec.Chunks != 1 {
		t.Fatalf("cancelled record: %+v", rec)
	}
	if ttl := rdb.PTTL(ctx, k.Status).Val(); ttl != 10*time.Minute {
		t.Fatalf("cancelled record TTL = %v, want the retention TTL", ttl)
	}
	again, _, err := s.Cancel(ctx, id)
	if err != nil || again != storage.Cancelled {
		t.Fatalf("second cancel: %s, %v", again, err)
	}
}

func TestCancelRefusesEndedExports(t *testing.T) {
	_, rdb := testkit.Mini(t)
	s := storage.New(rdb)
	done := staged(t, s, "x")
	if p, err := s.Claim(ctx, done, 10); err != nil || !p.Complete {
		t.Fatalf("claim: %+v, %v", p, err)
	}
	if _, _, err := s.Cancel(ctx, done); err == nil {
		t.Fatal("cancelled a COMPLETE export")
	} else if st, _ := storage.IsState(err); st != storage.Complete {
		t.Fatalf("err = %v, want a COMPLETE StateError", err)
	}
	failed := staged(t, s, "y")
	if err := s.Fail(ctx, failed, 0, "broken"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Cancel(ctx, failed); err == nil {
		t.Fatal("cancelled a FAILED export")
	}
	if _, _, err := s.Cancel(ctx, uuid.NewString()); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("cancel of an unknown id: %v", err)
	}
}

func TestFailDeletesDataFirstAndHonoursTheFence(t *testing.T) {
	_, rdb := testkit.Mini(t)
	s := storage.New(rdb)
	id := staged(t, s, "aaaa", "bbbb", "cccc")
	old, _ := s.Claim(ctx, id, 4)
	cur, _ := s.Claim(ctx, id, 1)
	if err := s.Fail(ctx, id, old.Fence, "stale attempt"); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("fail with a stale token: %v, want ErrFenced", err)
	}
	if err := s.Fail(ctx, id, cur.Fence, "disk full"); err != nil {
		t.Fatal(err)
	}
	rec, _ := s.Get(ctx, id)
	if rec.State != storage.Failed || rec.Error != "disk full" {
		t.Fatalf("record: %+v", rec)
	}
	k := storage.KeysFor(id)
	if n := rdb.Exists(ctx, k.Source, k.Data).Val(); n != 0 {
		t.Fatal("data or source kept after FAILED")
	}
	if ttl := rdb.PTTL(ctx, k.Status).Val(); ttl != storage.DefaultRetentionTTL {
		t.Fatalf("FAILED record TTL = %v", ttl)
	}
}

func TestStagingKeepsATTLAndSealChecksTheCount(t *testing.T) {
	_, rdb := testkit.Mini(t)
	s := storage.New(rdb, storage.WithActiveTTL(2*time.Hour))
	rec := &storage.Record{ID: uuid.NewString(), Owner: "alice", Queue: "q", ChunkSize: 2}
	if err := s.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, &storage.Record{ID: rec.ID}); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second create of one id: %v, want ErrExists", err)
	}
	if err := s.Stage(ctx, rec.ID, [][]byte{[]byte("ab"), []byte("cd")}); err != nil {
		t.Fatal(err)
	}
	k := storage.KeysFor(rec.ID)
	for _, key := range []string{k.Status, k.Source} {
		if ttl := rdb.PTTL(ctx, key).Val(); ttl != 2*time.Hour {
			t.Fatalf("%s TTL while staging = %v, want the active TTL", key, ttl)
		}
	}
	if _, err := s.Claim(ctx, rec.ID, 10); err == nil {
		t.Fatal("an unsealed export was claimed")
	}
	rec.TotalChunks, rec.TotalBytes, rec.SHA256 = 3, 6, "x"
	if err := s.Seal(ctx, rec); !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("seal with a wrong chunk count: %v, want ErrCorrupt", err)
	}
	rec.TotalChunks, rec.TotalBytes = 2, 4
	if err := s.Seal(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(ctx, rec.ID)
	if got.Staging || got.TotalBytes != 4 || got.TotalChunks != 2 || got.SHA256 != "x" {
		t.Fatalf("sealed record: %+v", got)
	}
	if err := s.Discard(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	testkit.AssertNoKeys(t, rdb)
}

func TestClaimRefusesEndedAndMissingExports(t *testing.T) {
	_, rdb := testkit.Mini(t)
	s := storage.New(rdb)
	if _, err := s.Claim(ctx, uuid.NewString(), 1); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("claim of an unknown id: %v", err)
	}
	id := staged(t, s, "a")
	if p, err := s.Claim(ctx, id, 1); err != nil || !p.Complete {
		t.Fatal(p, err)
	}
	if _, err := s.Claim(ctx, id, 1); err == nil {
		t.Fatal("a COMPLETE export was claimed again")
	} else if st, _ := storage.IsState(err); st != storage.Complete {
		t.Fatalf("err = %v", err)
	}
}

func TestAnEmptyExportCompletesAtClaim(t *testing.T) {
	_, rdb := testkit.Mini(t)
	s := storage.New(rdb)
	id := staged(t, s)
	p, err := s.Claim(ctx, id, 1<<20)
	if err != nil || !p.Complete || p.Bytes != 0 {
		t.Fatalf("claim of an empty export: %+v, %v", p, err)
	}
	testkit.AssertTTLs(t, rdb)
}

func TestTheCreatorsTTLsHoldWhateverTheWorkerSays(t *testing.T) {
	_, rdb := testkit.Mini(t)
	caller := storage.New(rdb, storage.WithActiveTTL(3*time.Hour), storage.WithRetentionTTL(7*time.Minute))
	worker := storage.New(rdb) // the defaults: 24 h and 1 h
	id := staged(t, caller, "aaaa", "bbbb")
	k := storage.KeysFor(id)
	if _, err := worker.Claim(ctx, id, 4); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{k.Status, k.Source, k.Data} {
		if ttl := rdb.PTTL(ctx, key).Val(); ttl != 3*time.Hour {
			t.Fatalf("%s TTL after a claim = %v, want the creator's 3 h", key, ttl)
		}
	}
	rec, _ := worker.Get(ctx, id)
	if _, err := worker.Append(ctx, id, rec.Fence, rec.Chunks, 4); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{k.Status, k.Data} {
		if ttl := rdb.PTTL(ctx, key).Val(); ttl != 7*time.Minute {
			t.Fatalf("%s TTL after COMPLETE = %v, want the creator's 7 min", key, ttl)
		}
	}
	other := staged(t, caller, "c")
	if _, _, err := worker.Cancel(ctx, other); err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.PTTL(ctx, storage.KeysFor(other).Status).Val(); ttl != 7*time.Minute {
		t.Fatalf("CANCELLED TTL = %v, want the creator's 7 min", ttl)
	}
}

package storage

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Default TTLs of an export's keys.
const (
	DefaultActiveTTL    = 24 * time.Hour // queued or running
	DefaultRetentionTTL = time.Hour      // after a terminal state
)

// Store reads and writes exports in Redis. The zero value is not usable;
// build one with New. A Store is safe for concurrent use.
type Store struct {
	rdb          redis.UniversalClient
	activeTTL    time.Duration
	retentionTTL time.Duration
	now          func() time.Time
}

// Option configures a Store.
type Option func(*Store)

// WithActiveTTL sets the TTL of a queued or running export's keys,
// refreshed at every claim and batch. Exports record the TTLs of the store
// that created them, and every later step applies those: a store's own
// TTLs only stand in for records that carry none. Non-positive values are
// ignored.
func WithActiveTTL(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.activeTTL = d
		}
	}
}

// WithRetentionTTL sets how long a terminal export's keys are kept.
// Non-positive values are ignored.
func WithRetentionTTL(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.retentionTTL = d
		}
	}
}

// WithClock sets the clock used for the record's timestamps.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// New returns a Store on rdb. The caller owns rdb and closes it.
func New(rdb redis.UniversalClient, opts ...Option) *Store {
	s := &Store{rdb: rdb, activeTTL: DefaultActiveTTL, retentionTTL: DefaultRetentionTTL, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Client returns the Redis client the store uses.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// ActiveTTL returns the TTL of a queued or running export's keys.
func (s *Store) ActiveTTL() time.Duration { return s.activeTTL }

// RetentionTTL returns the TTL of a terminal export's keys.
func (s *Store) RetentionTTL() time.Duration { return s.retentionTTL }

func (s *Store) nowMS() int64 { return s.now().UnixMilli() }

// run executes a script on the export's keys and decodes its result table.
func (s *Store) run(ctx context.Context, sc *redis.Script, id string, args ...any) ([]any, error) {
	res, err := sc.Run(ctx, s.rdb, KeysFor(id).list(), args...).Slice()
	if err != nil {
		return nil, err
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("storage: empty script reply for export %s", id)
	}
	return res, nil
}

// refusal turns a script's refusal code into an error; nil for success codes.
func refusal(res []any) error {
	code, _ := res[0].(string)
	switch code {
	case "ok", "complete", "again":
		return nil
	case "missing":
		return ErrNotFound
	case "exists":
		return ErrExists
	case "state":
		st, _ := res[1].(string)
		return &StateError{State: State(st)}
	case "fenced":
		return ErrFenced
	case "chunk_missing", "corrupt":
		return ErrCorrupt
	case "index":
		return fmt.Errorf("storage: append index is stale (record has %v chunks)", res[1])
	}
	return fmt.Errorf("storage: unexpected script reply %v", res)
}

func toInt(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case string:
		i, _ := strconv.ParseInt(n, 10, 64)
		return i
	}
	return 0
}

// ms converts a TTL to milliseconds, never below one: PEXPIRE 0 deletes.
func ms(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

// Get returns the export's status record, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Record, error) {
	h, err := s.rdb.HGetAll(ctx, KeysFor(id).Status).Result()
	if err != nil {
		return Record{}, err
	}
	if len(h) == 0 {
		return Record{}, ErrNotFound
	}
	return parseRecord(id, h), nil
}

// MaxInlineChunks is the most chunks CreateSealed takes in one script.
const MaxInlineChunks = 256

// Create writes a new CREATED record for rec.ID, owned by rec.Owner and
// bound to rec.Queue, with the active TTL, and marks it staging: Stage
// then adds the source and Seal ends staging. It fills rec's state and
// times, and returns ErrExists when the id is taken.
func (s *Store) Create(ctx context.Context, rec *Record) error {
	return s.create(ctx, rec, nil, false)
}

// CreateSealed writes a new CREATED record with its whole source (at most
// MaxInlineChunks chunks) in one step; rec carries TotalBytes, TotalChunks
// and SHA256. It returns ErrExists when the id is taken.
func (s *Store) CreateSealed(ctx context.Context, rec *Record, chunks [][]byte) error {
	if len(chunks) > MaxInlineChunks || int64(len(chunks)) != rec.TotalChunks {
		return fmt.Errorf("storage: CreateSealed takes %d chunks (at most %d), got %d", rec.TotalChunks, MaxInlineChunks, len(chunks))
	}
	return s.create(ctx, rec, chunks, true)
}

func (s *Store) create(ctx context.Context, rec *Record, chunks [][]byte, sealed bool) error {
	now := s.now()
	seal := "0"
	if sealed {
		seal = "1"
	}
	args := make([]any, 0, 10+len(chunks))
	args = append(args, rec.Owner, rec.Queue, rec.ChunkSize, now.UnixMilli(), ms(s.activeTTL), seal, rec.TotalBytes, rec.TotalChunks, rec.SHA256, ms(s.retentionTTL))
	for _, c := range chunks {
		args = append(args, c)
	}
	res, err := s.run(ctx, createScript, rec.ID, args...)
	if err != nil {
		return err
	}
	if err := refusal(res); err != nil {
		return err
	}
	rec.State, rec.Staging = Created, !sealed
	rec.CreatedAt = time.UnixMilli(now.UnixMilli()).UTC()
	rec.UpdatedAt = rec.CreatedAt
	return nil
}

// Stage appends chunks to the export's staged source. The chunks and the
// TTL land in one MULTI, so the key never exists without a TTL.
func (s *Store) Stage(ctx context.Context, id string, chunks [][]byte) error {
	if len(chunks) == 0 {
		return nil
	}
	k := KeysFor(id)
	vals := make([]any, len(chunks))
	for i, c := range chunks {
		vals[i] = c
	}
	cmds, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, k.Source, vals...)
		p.PExpire(ctx, k.Source, s.activeTTL)
		return nil
	})
	if err != nil && strings.HasPrefix(err.Error(), "EXECABORT") {
		// Say why the transaction was discarded (OOM, say), not that it was.
		for _, c := range cmds {
			if cerr := c.Err(); cerr != nil && !strings.HasPrefix(cerr.Error(), "EXECABORT") {
				return cerr
			}
		}
	}
	return err
}

// Seal ends staging: it checks that rec.TotalChunks chunks were staged and
// records the source's size and hex SHA-256 (rec.TotalBytes, rec.SHA256).
func (s *Store) Seal(ctx context.Context, rec *Record) error {
	now := s.now()
	res, err := s.run(ctx, sealScript, rec.ID, rec.TotalBytes, rec.TotalChunks, rec.SHA256, now.UnixMilli(), ms(s.activeTTL))
	if err != nil {
		return err
	}
	if err := refusal(res); err != nil {
		return err
	}
	rec.Staging = false
	rec.UpdatedAt = time.UnixMilli(now.UnixMilli()).UTC()
	return nil
}

// Discard deletes every key of the export. It is for a start that failed
// before the caller got the id.
func (s *Store) Discard(ctx context.Context, id string) error {
	return s.rdb.Del(ctx, KeysFor(id).list()...).Err()
}

// Progress is an export's progress after a claim or a batch.
type Progress struct {
	Fence    int64 // token of the claim the step ran under
	Chunks   int64 // chunks copied so far: where the next batch starts
	Bytes    int64 // bytes copied so far
	Moved    int64 // bytes this step moved
	Complete bool  // the step copied the last chunk and completed the export
}

// Claim moves a CREATED or PENDING export to PENDING with a new fence
// token, and moves the first batch of up to batchBytes (at least one
// chunk) in the same step. A terminal export gives a *StateError, a
// missing one ErrNotFound, one whose staged source does not match its
// progress ErrCorrupt (with the progress and the new token).
func (s *Store) Claim(ctx context.Context, id string, batchBytes int64) (Progress, error) {
	res, err := s.run(ctx, claimScript, id, s.nowMS(), ms(s.activeTTL), ms(s.retentionTTL), batchBytes)
	return progress(res, err)
}

// Append moves the next batch of up to batchBytes (at least one chunk)
// into the data, fenced by the claim's token and checked against the
// expected chunk index. It refuses with ErrFenced, a *StateError (for
// example CANCELLED) or ErrCorrupt; on refusal nothing was appended, except
// for ErrCorrupt, which records the chunks moved before the gap.
func (s *Store) Append(ctx context.Context, id string, fence, index, batchBytes int64) (Progress, error) {
	res, err := s.run(ctx, appendScript, id, fence, index, batchBytes, s.nowMS(), ms(s.activeTTL), ms(s.retentionTTL))
	return progress(res, err)
}

func progress(res []any, err error) (Progress, error) {
	if err != nil {
		return Progress{}, err
	}
	if err := refusal(res); err != nil {
		if len(res) >= 4 {
			p := Progress{Chunks: toInt(res[1]), Bytes: toInt(res[2]), Fence: toInt(res[3])}
			return p, fmt.Errorf("%w: staged source or data does not match the record at chunk %d", err, p.Chunks)
		}
		return Progress{}, err
	}
	return Progress{Chunks: toInt(res[1]), Bytes: toInt(res[2]), Fence: toInt(res[3]), Moved: toInt(res[4]), Complete: res[0] == "complete"}, nil
}

// Fail ends a CREATED or PENDING export FAILED with reason, deleting its
// data and source first. fence 0 fails it whoever holds it (the sweeper);
// otherwise a newer claim makes it ErrFenced. A terminal export gives a
// *StateError.
func (s *Store) Fail(ctx context.Context, id string, fence int64, reason string) error {
	res, err := s.run(ctx, failScript, id, fence, reason, s.nowMS(), ms(s.retentionTTL))
	if err != nil {
		return err
	}
	return refusal(res)
}

// Cancel ends a CREATED or PENDING export CANCELLED in one atomic step and
// deletes its data and source; no append can succeed after it returns.
// It returns the state the export had (Cancelled when cancelled already)
// and the record after the cancel, or a *StateError for COMPLETE and
// FAILED.
func (s *Store) Cancel(ctx context.Context, id string) (State, Record, error) {
	res, err := s.run(ctx, cancelScript, id, s.nowMS(), ms(s.retentionTTL))
	if err != nil {
		return "", Record{}, err
	}
	if err := refusal(res); err != nil {
		return "", Record{}, err
	}
	prev, _ := res[1].(string)
	flat, _ := res[2].([]any)
	h := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		v, _ := flat[i+1].(string)
		h[k] = v
	}
	if res[0] == "again" {
		prev = string(Cancelled)
	}
	return State(prev), parseRecord(id, h), nil
}

// ReadData returns up to n data chunks starting at chunk index start.
func (s *Store) ReadData(ctx context.Context, id string, start, n int64) ([]string, error) {
	return s.rdb.LRange(ctx, KeysFor(id).Data, start, start+n-1).Result()
}

// ForEachExport calls fn with the id of every export that has a status
// record, scanning the keyspace (every master of a cluster) in batches. It
// is for background sweeps, not for request paths.
func (s *Store) ForEachExport(ctx context.Context, fn func(id string) error) error {
	scan := func(ctx context.Context, c redis.UniversalClient) error {
		it := c.Scan(ctx, 0, "export:{*}", 1000).Iterator()
		for it.Next(ctx) {
			k := it.Val()
			if !strings.HasSuffix(k, "}") { // a -source or -data key
				continue
			}
			id := strings.TrimSuffix(strings.TrimPrefix(k, "export:{"), "}")
			if !ValidID(id) {
				continue
			}
			if err := fn(id); err != nil {
				return err
			}
		}
		return it.Err()
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	}
	return scan(ctx, s.rdb)
}

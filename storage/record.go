package storage

import (
	"strconv"
	"time"
)

// State is the lifecycle state of an export, stored verbatim in Redis.
type State string

// The five states of an export.
const (
	Created   State = "CREATED"   // staged and queued, no worker has claimed it yet
	Pending   State = "PENDING"   // claimed by a worker (running, or waiting for a retry)
	Complete  State = "COMPLETE"  // every chunk copied; data readable until retention ends
	Cancelled State = "CANCELLED" // cancelled by a caller; data and source deleted
	Failed    State = "FAILED"    // ended by a permanent error; Error holds the reason
)

// Terminal reports whether s is a final state.
func (s State) Terminal() bool { return s == Complete || s == Cancelled || s == Failed }

// Record is the status record of an export as stored in its hash.
type Record struct {
	ID          string
	State       State
	Owner       string
	Queue       string
	ChunkSize   int64
	TotalBytes  int64 // size of the staged source
	TotalChunks int64
	SHA256      string // hex SHA-256 of the staged source
	Bytes       int64  // bytes copied into the data key
	Chunks      int64  // chunks copied into the data key
	Fence       int64  // token of the latest claim
	Attempts    int64  // number of claims
	Error       string // reason of a FAILED export
	Staging     bool   // true until the source is sealed
	CreatedAt   time.Time
	UpdatedAt   time.Time
	StartedAt   time.Time
	FinishedAt  time.Time
}

// Hash field names of the status record.
const (
	fState       = "state"
	fOwner       = "owner"
	fQueue       = "queue"
	fChunkSize   = "chunk_size"
	fTotalBytes  = "total_bytes"
	fTotalChunks = "total_chunks"
	fSHA256      = "sha256"
	fBytes       = "bytes"
	fChunks      = "chunks"
	fFence       = "fence"
	fAttempts    = "attempts"
	fError       = "error"
	fStaging     = "staging"
	fCreatedAt   = "created_at"
	fUpdatedAt   = "updated_at"
	fStartedAt   = "started_at"
	fFinishedAt  = "finished_at"
)

func parseRecord(id string, h map[string]string) Record {
	num := func(f string) int64 { n, _ := strconv.ParseInt(h[f], 10, 64); return n }
	ms := func(f string) time.Time {
		if n := num(f); n > 0 {
			return time.UnixMilli(n).UTC()
		}
		return time.Time{}
	}
	return Record{
		ID:          id,
		State:       State(h[fState]),
		Owner:       h[fOwner],
		Queue:       h[fQueue],
		ChunkSize:   num(fChunkSize),
		TotalBytes:  num(fTotalBytes),
		TotalChunks: num(fTotalChunks),
		SHA256:      h[fSHA256],
		Bytes:       num(fBytes),
		Chunks:      num(fChunks),
		Fence:       num(fFence),
		Attempts:    num(fAttempts),
		Error:       h[fError],
		Staging:     h[fStaging] == "1",
		CreatedAt:   ms(fCreatedAt),
		UpdatedAt:   ms(fUpdatedAt),
		StartedAt:   ms(fStartedAt),
		FinishedAt:  ms(fFinishedAt),
	}
}

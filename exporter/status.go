package exporter

import (
	"time"

	"github.com/exportsvc/exportsvc/storage"
)

// State is the lifecycle state of an export.
type State string

// The five states. An export goes CREATED -> PENDING -> COMPLETE, or ends
// CANCELLED or FAILED from CREATED or PENDING.
const (
	StateCreated   State = State(storage.Created)
	StatePending   State = State(storage.Pending)
	StateComplete  State = State(storage.Complete)
	StateCancelled State = State(storage.Cancelled)
	StateFailed    State = State(storage.Failed)
)

// Terminal reports whether s is final: COMPLETE, CANCELLED or FAILED.
func (s State) Terminal() bool { return storage.State(s).Terminal() }

// Status is an export's record as callers see it.
type Status struct {
	ID          string    `json:"id"`
	State       State     `json:"state"`
	Owner       string    `json:"owner"`
	BytesCopied int64     `json:"bytes_copied"`
	TotalBytes  int64     `json:"total_bytes"`
	Chunks      int64     `json:"chunks_copied"`
	TotalChunks int64     `json:"total_chunks"`
	SHA256      string    `json:"sha256"` // hex SHA-256 of the source
	Attempts    int64     `json:"attempts"`
	Error       string    `json:"error,omitempty"` // reason of a FAILED export
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
}

func statusOf(r storage.Record) Status {
	return Status{
		ID: r.ID, State: State(r.State), Owner: r.Owner,
		BytesCopied: r.Bytes, TotalBytes: r.TotalBytes, Chunks: r.Chunks, TotalChunks: r.TotalChunks,
		SHA256: r.SHA256, Attempts: r.Attempts, Error: r.Error,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
	}
}

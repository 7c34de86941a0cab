package storage

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound means the export has no status record: it never existed,
	// or its TTL ran out.
	ErrNotFound = errors.New("no export record")
	// ErrExists means a record already exists for a freshly generated id.
	ErrExists = errors.New("export record already exists")
	// ErrFenced means a newer claim owns the export: this writer lost its
	// lease and must stop without writing.
	ErrFenced = errors.New("export claimed by a newer attempt")
	// ErrCorrupt means the staged source is damaged (a chunk is missing, or
	// sizes disagree). It is permanent: a retry cannot repair it.
	ErrCorrupt = errors.New("staged source damaged")
)

// StateError reports that an export is in a state that forbids the step.
type StateError struct {
	State State
}

func (e *StateError) Error() string { return fmt.Sprintf("export is %s", e.State) }

// IsState reports whether err is a StateError, and returns the state.
func IsState(err error) (State, bool) {
	var se *StateError
	if errors.As(err, &se) {
		return se.State, true
	}
	return "", false
}

package exporter

import "errors"

// Errors of the exporter API, matched with errors.Is. The messages say what
// went wrong; wrapped errors add the id or state.
var (
	// ErrNotFound: no export with that id (never created, or expired after
	// its retention time).
	ErrNotFound = errors.New("no export found for id")
	// ErrPermissionDenied: the user lacks the permission to start exports,
	// or neither owns the export nor has the admin permission.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrNotCancellable: the export is COMPLETE or FAILED already.
	ErrNotCancellable = errors.New("export can no longer be cancelled")
	// ErrNotComplete: the export's data cannot be read before it is COMPLETE.
	ErrNotComplete = errors.New("export is not complete")
	// ErrInvalidID: the id is not a canonical lowercase UUID
	// (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx); it never reaches Redis.
	ErrInvalidID = errors.New("invalid export id: want a lowercase canonical UUID")
	// ErrTooLarge: the source is larger than the configured size limit.
	ErrTooLarge = errors.New("export source exceeds the size limit")
)

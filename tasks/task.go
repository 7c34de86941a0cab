// Package tasks holds the asynq task that runs an export: its type, its
// payload and constructor, the handler that copies the staged source into
// the export's data, the retry policy, and the sweeper that settles exports
// whose task asynq archived.
package tasks

import (
	"encoding/json"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/exportsvc/exportsvc/storage"
)

// TypeExport is the asynq task type of an export.
const TypeExport = "export:copy"

// Payload is the body of an export task. The task's TaskID is the export
// id as well, so asynq refuses a second task for the same export.
type Payload struct {
	ExportID string `json:"export_id"`
}

// NewExportTask returns the task that runs export id. Its TaskID is id;
// opts add queue, retry and timeout options.
func NewExportTask(id string, opts ...asynq.Option) (*asynq.Task, error) {
	if !storage.ValidID(id) {
		return nil, fmt.Errorf("tasks: export id %q is not a canonical UUID", id)
	}
	b, err := json.Marshal(Payload{ExportID: id})
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeExport, b, append(opts, asynq.TaskID(id))...), nil
}

// ParsePayload decodes and validates an export task's payload.
func ParsePayload(b []byte) (Payload, error) {
	var p Payload
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("tasks: bad export payload: %w", err)
	}
	if !storage.ValidID(p.ExportID) {
		return p, fmt.Errorf("tasks: export id %q in payload is not a canonical UUID", p.ExportID)
	}
	return p, nil
}

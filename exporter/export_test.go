package exporter

// SetTaskStopper replaces how CancelExport stops the asynq task, so tests
// can suppress asynq's signal and prove the Redis fence alone holds.
func SetTaskStopper(e *Exporter, f func(queue, id string)) {
	e.stopTask = func(queue, id string, _ bool) { f(queue, id) }
}

package exporter_test

import (
	"os"
	"testing"

	"github.com/exportsvc/exportsvc/internal/testkit"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testkit.RemoveBinaries() // the worker binary of the process tests
	os.Exit(code)
}

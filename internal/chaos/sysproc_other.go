//go:build !linux

package main

import "syscall"

// sysProcAttr: without Pdeathsig, the harness's own cleanup stops workers.
func sysProcAttr() *syscall.SysProcAttr { return nil }

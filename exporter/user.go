package exporter

import "slices"

// Default permission names.
const (
	PermissionExport = "exporter"       // needed to start an export
	PermissionAdmin  = "exporter:admin" // reads and cancels anyone's exports
)

// User is the caller an export operation runs for.
type User struct {
	ID          string
	Permissions []string
}

// PermissionChecker decides whether a user holds a permission.
type PermissionChecker interface {
	HasPermission(u User, permission string) bool
}

// PermissionFunc adapts a function to a PermissionChecker.
type PermissionFunc func(u User, permission string) bool

// HasPermission calls f.
func (f PermissionFunc) HasPermission(u User, p string) bool { return f(u, p) }

// ListChecker is the default PermissionChecker: a user holds a permission
// when its Permissions list contains it.
type ListChecker struct{}

// HasPermission reports whether u.Permissions contains p.
func (ListChecker) HasPermission(u User, p string) bool { return slices.Contains(u.Permissions, p) }

package storage

import "regexp"

// canonicalID matches a canonical, lowercase, hyphenated UUID.
var canonicalID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// ValidID reports whether id is a canonical UUID: 36 characters, lowercase
// hexadecimal, with hyphens. Only such ids ever reach a Redis key.
func ValidID(id string) bool { return canonicalID.MatchString(id) }

// Keys names the Redis keys of one export.
type Keys struct {
	Status string // hash: the status record
	Source string // list: staged source chunks
	Data   string // list: copied result chunks
}

// KeysFor returns the keys of export id. The caller validates id first.
func KeysFor(id string) Keys {
	base := "export:{" + id + "}"
	return Keys{Status: base, Source: base + "-source", Data: base + "-data"}
}

func (k Keys) list() []string { return []string{k.Status, k.Source, k.Data} }

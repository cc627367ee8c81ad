// Package osrelease parses os-release files (freedesktop os-release(5)):
// KEY=value lines, values optionally quoted. It neither expands shell
// escapes nor validates keys.
package osrelease

import (
	"os"
	"strings"
)

// Parse returns the KEY=value pairs of an os-release text.
func Parse(text string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		m[k] = v
	}
	return m
}

// Read parses the file at path; a missing or unreadable file yields an
// empty map, as os-release(5) asks of its readers.
func Read(path string) map[string]string {
	b, err := os.ReadFile(path)
	if err != nil {
		return map[string]string{}
	}
	return Parse(string(b))
}

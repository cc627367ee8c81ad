// Package stats holds the statistics the benches report. They report
// medians, which one run slowed by TCG or a busy host does not move; it
// does not hold timing or the ratios themselves, which each bench states
// against its own reference.
package stats

import (
	"cmp"
	"slices"
)

// Median returns the middle value of v, the upper of the two middle ones
// when len(v) is even, or the zero value when v is empty. v is left as it
// was.
func Median[T cmp.Ordered](v []T) T {
	if len(v) == 0 {
		var zero T
		return zero
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

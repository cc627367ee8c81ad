package bundle

import (
	"fmt"
	"strings"
)

// maxVersionLen bounds a version string; real ones are a few characters.
const maxVersionLen = 64

// parseVersion splits a version into its numeric components, with
// leading zeros removed so that they compare as numbers without limit on
// their size: a longer component is larger, and equal lengths compare as
// strings.
func parseVersion(v string) ([]string, error) {
	if v == "" || len(v) > maxVersionLen {
		return nil, fmt.Errorf("version %q is not 1 to %d characters", v, maxVersionLen)
	}
	parts := strings.Split(v, ".")
	for i, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return nil, fmt.Errorf("version %q is not dot-separated decimal numbers", v)
		}
		parts[i] = strings.TrimLeft(p, "0")
	}
	return parts, nil
}

// CompareVersions compares two versions and returns -1, 0 or +1 as a is
// older than, the same as or newer than b. A version is one or more
// non-negative decimal numbers separated by dots ("2", "1.10",
// "2024.05.1"); they compare component by component as numbers, so 1.9 <
// 1.10 and 1.01 == 1.1, and missing trailing components count as zero, so
// 2 == 2.0. Anything else (letters, signs, empty components) is an error
// rather than a guess, since the answer decides whether an install is a
// downgrade.
func CompareVersions(a, b string) (int, error) {
	pa, err := parseVersion(a)
	if err != nil {
		return 0, err
	}
	pb, err := parseVersion(b)
	if err != nil {
		return 0, err
	}
	for i := range max(len(pa), len(pb)) {
		x, y := "", ""
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		if c := compareDigits(x, y); c != 0 {
			return c, nil
		}
	}
	return 0, nil
}

// compareDigits compares two decimal numbers without leading zeros ("" is
// zero).
func compareDigits(x, y string) int {
	if len(x) != len(y) {
		if len(x) < len(y) {
			return -1
		}
		return 1
	}
	return strings.Compare(x, y)
}

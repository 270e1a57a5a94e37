package filesystem

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"fast-sandbox.io/envd/internal/paths"
)

// mountInfo is the daemon's view of its mounts (proc(5): /proc/self/mountinfo).
const mountInfo = "/proc/self/mountinfo"

// mountPointsWithin lists the mount points at dir or below it (dir absolute, clean and with its
// symlinks resolved), as the daemon's mount namespace has them: what a rename cannot move and a
// copy-then-remove would leave half removed (EBUSY).
func mountPointsWithin(dir string) ([]string, error) {
	file, err := os.Open(mountInfo)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var found []string
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for scanner.Scan() {
		// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue": the 5th field.
		fields := strings.Fields(scanner.Text())
		if len(fields) < 5 {
			continue
		}
		point := unescapeMountPath(fields[4])
		if paths.Within(point, dir) {
			found = append(found, point)
		}
	}
	return found, scanner.Err()
}

// unescapeMountPath undoes the kernel's octal escapes of a mountinfo path (\040 for a space,
// \011, \012, \134).
func unescapeMountPath(escaped string) string {
	if !strings.Contains(escaped, `\`) {
		return escaped
	}
	var out strings.Builder
	for i := 0; i < len(escaped); i++ {
		if escaped[i] == '\\' && i+3 < len(escaped) {
			if value, err := strconv.ParseUint(escaped[i+1:i+4], 8, 8); err == nil {
				out.WriteByte(byte(value))
				i += 3
				continue
			}
		}
		out.WriteByte(escaped[i])
	}
	return out.String()
}

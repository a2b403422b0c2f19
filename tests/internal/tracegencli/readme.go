package tracegencli

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// ReadmePrefix starts every tracegen command line in the repository's
// README.md; the tests' README.md writes them after a `cd tests`, as
// TestsReadmePrefix.
const (
	ReadmePrefix      = "cd tests && go run ./cmd/tracegen"
	TestsReadmePrefix = "go run ./cmd/tracegen"
)

// RepoRoot returns the repository root (three levels above this file).
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		wd, _ := os.Getwd()
		return filepath.Clean(filepath.Join(wd, "..", "..", ".."))
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// Command is one tracegen command line of a document.
type Command struct {
	Line int      // 1-based line number in the document
	Text string   // the line as written
	Args []string // the arguments after the prefix
}

// CommandLines returns every line of the markdown document at path that
// starts with prefix (after leading blanks), with its arguments split as a
// POSIX shell would for these simple lines: on blanks, with single or double
// quotes, and a trailing `# comment` dropped.
func CommandLines(path, prefix string) ([]Command, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Command
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		rest := line[len(prefix):]
		if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
			continue // e.g. ./cmd/tracegenfoo
		}
		args, err := shellSplit(rest)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		out = append(out, Command{Line: n, Text: line, Args: args})
	}
	return out, sc.Err()
}

// shellSplit splits a simple shell command line into words. It refuses what
// it does not model (pipes, redirections, variables, substitutions, escapes)
// rather than guessing.
func shellSplit(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			i = len(s) // comment to the end of the line
		case strings.IndexByte("|&;<>$`\\(){}*?", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q not supported in a tracegen command line: %s", c, s)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %s", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

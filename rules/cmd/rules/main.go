// Command rules is the rule author's tool, like promtool for citygw rules:
//
//	rules check FILES…   compile every rule; errors as file:line:col
//	rules test FILES…    run rule unit-test files
//
// Both exit non-zero on any error or failure.
package main

import (
	"fmt"
	"os"

	"github.com/citygw/citygw/rules"
)

const usage = `usage:
  rules check RULE_FILES…   compile rules against the shipped device profiles
  rules test TEST_FILES…    run rule unit tests (see rules/README.md)
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case "check":
		if err := rules.Check(args[1:]...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("%d file(s) OK\n", len(args)-1)
		return 0
	case "test":
		if err := rules.RunTests(os.Stdout, args[1:]...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	fmt.Fprint(os.Stderr, usage)
	return 2
}

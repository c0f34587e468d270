// Command hello prints its arguments; testenv's tests build it with GoBinary.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	fmt.Println("hello", strings.Join(os.Args[1:], " "))
}

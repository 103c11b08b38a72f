// Command funclen lists the Go functions longer than -max lines (80 by
// default; test files excluded) under the given directories; sort -rn
// puts the longest first:
//
//	go run ./scripts/funclen internal cmd | sort -rn
//
// The code base keeps every function under 80 lines except the bzip2
// block coder (internal/delta: bz2Reader.readBlock, bz2Block), whose
// length is the format's.
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	max := flag.Int("max", 80, "longest allowed function, in lines")
	flag.Parse()
	fset := token.NewFileSet()
	n := 0
	for _, root := range flag.Args() {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, p, nil, 0)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return nil
			}
			for _, decl := range f.Decls {
				fd, ok := decl.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				lines := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
				if lines > *max {
					name := fd.Name.Name
					if fd.Recv != nil && len(fd.Recv.List) > 0 {
						t := fd.Recv.List[0].Type
						if s, ok := t.(*ast.StarExpr); ok {
							t = s.X
						}
						if id, ok := t.(*ast.Ident); ok {
							name = id.Name + "." + name
						}
					}
					fmt.Printf("%4d %s:%d %s\n", lines, p, fset.Position(fd.Pos()).Line, name)
					n++
				}
			}
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	fmt.Printf("%d functions over %d lines\n", n, *max)
}

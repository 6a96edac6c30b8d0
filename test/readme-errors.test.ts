// The README's "Error codes" table lists exactly the codes of src/errors.ts: the `SelfxitErrorCode` union, read with
// the TypeScript parser (the codes are a type, so there is no runtime list to import), against the table's first column.
import fs from 'node:fs';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const read = (rel: string): string => fs.readFileSync(new URL(rel, import.meta.url), 'utf8');

/** The string literals of the `SelfxitErrorCode` union in src/errors.ts. */
function declaredCodes(): string[] {
  const file = ts.createSourceFile('errors.ts', read('../src/errors.ts'), ts.ScriptTarget.ES2022, true);
  const alias = file.statements.find(
    (s): s is ts.TypeAliasDeclaration => ts.isTypeAliasDeclaration(s) && s.name.text === 'SelfxitErrorCode',
  );
  if (!alias) throw new Error('src/errors.ts declares no type SelfxitErrorCode');
  const members = ts.isUnionTypeNode(alias.type) ? alias.type.types : [alias.type];
  return members.map((m) => {
    if (!ts.isLiteralTypeNode(m) || !ts.isStringLiteral(m.literal))
      throw new Error(`SelfxitErrorCode member is not a string literal: ${m.getText(file)}`);
    return m.literal.text;
  });
}

/** The first-column codes of the table under README's `## Error codes` heading. */
function readmeCodes(): string[] {
  const readme = read('../README.md');
  const start = readme.indexOf('\n## Error codes\n');
  if (start < 0) throw new Error('README.md has no "## Error codes" section');
  const next = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, next < 0 ? undefined : next);
  return section
    .split('\n')
    .map((line) => /^\|\s*`([A-Z0-9_]+)`\s*\|/.exec(line)?.[1])
    .filter((code): code is string => code !== undefined);
}

describe('README error codes', () => {
  it('the table lists exactly the codes of src/errors.ts, each once', () => {
    const declared = declaredCodes();
    const listed = readmeCodes();
    expect(declared.length, 'codes found in src/errors.ts').toBeGreaterThan(0);
    const missing = declared.filter((c) => !listed.includes(c));
    const extra = listed.filter((c) => !declared.includes(c));
    const twice = listed.filter((c, i) => listed.indexOf(c) !== i);
    expect({ missing, extra, twice }, 'README "Error codes" table vs SelfxitErrorCode in src/errors.ts').toEqual({
      missing: [],
      extra: [],
      twice: [],
    });
  });
});

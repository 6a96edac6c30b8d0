// ESLint (flat config): typescript-eslint's recommended rules on every TypeScript and JavaScript file; formatting is
// Prettier's job (eslint-config-prettier turns the stylistic rules off). `npm run lint` runs both, `npm run lint:fix` fixes.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import prettier from 'eslint-config-prettier';
import globals from 'globals';

export default tseslint.config(
  {
    ignores: [
      'node_modules/',
      'dist/',
      'demo-dist/',
      'test-results/',
      'playwright-report/',
      '.cache/',
      'e2e/.bundles/',
      'e2e/.build/',
      'demo/.bundle/',
      'bench/.dist/',
      'bench/.bundles/',
      'bench/.cache/',
      'public/',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'module',
      globals: { ...globals.browser, ...globals.node },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  prettier,
);

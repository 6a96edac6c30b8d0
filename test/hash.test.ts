// sha256Hex on both paths: WebCrypto, and the pure-JS SHA-256 used where crypto.subtle is missing (plain-HTTP pages that
// are not localhost), forced by passing no WebCrypto and by removing globalThis.crypto as such a page has it.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { sha256Hex } from '../src/graph/hash.js';

const KNOWN: readonly [string, string][] = [
  ['', 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
  ['abc', 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'],
  [
    'abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq',
    '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1',
  ],
];

/** Deterministic bytes over several 64-byte blocks, with every byte value. */
function bytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + 7) & 255;
  return b;
}

describe('sha256Hex', () => {
  afterEach(() => vi.unstubAllGlobals());

  it('WebCrypto and the pure-JS fallback give the known digests, for bytes and for UTF-8 text', async () => {
    for (const [text, hex] of KNOWN) {
      expect(await sha256Hex(text)).toBe(hex);
      expect(await sha256Hex(text, null)).toBe(hex);
      expect(await sha256Hex(new TextEncoder().encode(text), null)).toBe(hex);
    }
  });

  it('the two paths agree on sizes around the block boundaries and on a large input', async () => {
    for (const n of [1, 55, 56, 63, 64, 65, 119, 120, 1000, 3 * 1024 * 1024 + 5]) {
      const b = bytes(n);
      expect(await sha256Hex(b, null), `${n} bytes`).toBe(await sha256Hex(b));
    }
  });

  it('works without crypto.subtle, as on a plain-HTTP page that is not localhost', async () => {
    vi.stubGlobal('crypto', {}); // a non-secure context has crypto.getRandomValues but no crypto.subtle
    expect(globalThis.crypto.subtle).toBeUndefined();
    expect(await sha256Hex('abc')).toBe(KNOWN[1]![1]);
    vi.stubGlobal('crypto', undefined);
    expect(await sha256Hex(new Uint8Array(0))).toBe(KNOWN[0]![1]);
  });

  it('uses WebCrypto when present', async () => {
    const digest = vi.fn(async () => new Uint8Array(32).fill(0xab).buffer);
    expect(await sha256Hex('x', { digest })).toBe('ab'.repeat(32));
    expect(digest).toHaveBeenCalledWith('SHA-256', new TextEncoder().encode('x'));
  });
});

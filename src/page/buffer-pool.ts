// Input buffers the worker moved back once a call was done with them (ClassifyAnswer `spare`): the page copies the next
// inputs of the same byte size into them instead of allocating (a 224 x 224 ImageData's 200 KB cost ~250 µs a call).
// The SDK owns them: they never reach the caller, and each is in the pool or in one message, never both.

/** Buffers kept at most, and their bytes at most (a spare over it is dropped). */
export const POOL_BUFFERS = 4;
export const POOL_BYTES = 16 * 2 ** 20; // one large input must not stay pinned for long: 16 MiB

/** Spare ArrayBuffers by size, the newest used first; bounded in count and bytes. */
export class BufferPool {
  private readonly free: ArrayBuffer[] = [];
  private bytes = 0;

  constructor(
    private readonly maxBuffers = POOL_BUFFERS,
    private readonly maxBytes = POOL_BYTES,
  ) {}

  /** A buffer of exactly `byteLength` bytes, taken out of the pool; undefined when none. */
  take(byteLength: number): ArrayBuffer | undefined {
    for (let i = this.free.length - 1; i >= 0; i--) {
      const b = this.free[i]!;
      if (b.byteLength !== byteLength) continue;
      this.free.splice(i, 1);
      this.bytes -= byteLength;
      return b;
    }
    return undefined;
  }

  /** Keeps `buffer` for a later {@link take} (not an empty or detached one); the oldest go past the bounds. */
  give(buffer: ArrayBuffer): void {
    const n = buffer.byteLength;
    if (n === 0 || n > this.maxBytes || this.free.includes(buffer)) return;
    this.free.push(buffer);
    this.bytes += n;
    while (this.free.length > this.maxBuffers || this.bytes > this.maxBytes)
      this.bytes -= this.free.shift()!.byteLength;
  }

  /** Buffers held now. */
  get size(): number {
    return this.free.length;
  }

  /** Drops every buffer (the worker is gone). */
  clear(): void {
    this.free.length = 0;
    this.bytes = 0;
  }
}

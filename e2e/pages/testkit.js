// Helpers the test pages share (classic script → window.testkit): fetch test data, describe errors as plain data.
window.testkit = {
  /** The 64 preprocessed samples of a test bundle, one Float32Array each. */
  async inputs(bundle) {
    const buf = await (await fetch(`${bundle}/inputs.f32`)).arrayBuffer();
    const all = new Float32Array(buf);
    const per = 3 * 16 * 16;
    return Array.from({ length: all.length / per }, (_, i) => all.slice(i * per, (i + 1) * per));
  },
  /** The same samples as 16x16 ImageData. */
  async images(bundle) {
    const buf = new Uint8ClampedArray(await (await fetch(`${bundle}/images.rgba`)).arrayBuffer());
    const per = 16 * 16 * 4;
    return Array.from({ length: buf.length / per }, (_, i) => new ImageData(buf.slice(i * per, (i + 1) * per), 16, 16));
  },
  /** Images `indices` of a CIFAR-style uint8 file (32x32 RGB, NHWC, one after another) as 32x32 RGBA ImageData. */
  async cifarImages(url, indices) {
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    return indices.map((i) => {
      const rgba = new Uint8ClampedArray(32 * 32 * 4);
      for (let p = 0; p < 1024; p++) {
        rgba[p * 4] = bytes[i * 3072 + p * 3];
        rgba[p * 4 + 1] = bytes[i * 3072 + p * 3 + 1];
        rgba[p * 4 + 2] = bytes[i * 3072 + p * 3 + 2];
        rgba[p * 4 + 3] = 255;
      }
      return new ImageData(rgba, 32, 32);
    });
  },
  async expected(bundle) {
    return (await fetch(`${bundle}/expected.json`)).json();
  },
  /** A rejection as plain data (name, code, message, details), or null when it resolved. */
  async error(promise) {
    try {
      await promise;
      return null;
    } catch (e) {
      return {
        name: e?.name,
        code: e?.code,
        message: String(e?.message),
        details: e?.details ?? null,
        isSelfxitError: e instanceof window.selfxit.SelfxitError,
      };
    }
  },
  /** Strips a result to what the tests compare. */
  brief(r) {
    return {
      index: r.index,
      exit: r.exit.index,
      confidence: r.confidence,
      label: r.label,
      exitName: r.exit.name,
      stages: r.timings.stages.length,
    };
  },
};

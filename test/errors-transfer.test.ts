// Errors across a comlink boundary (a MessageChannel standing in for the page ↔ worker link): with protocol.ts's
// transfer handler installed, a SelfxitError thrown on one side rejects the call on the other as a SelfxitError with
// the same code, message and details; any other thrown value arrives as INTERNAL.
import { afterEach, describe, expect, it } from 'vitest';
import { expose, proxy, wrap, type Remote } from 'comlink';
import { SelfxitError, fromErrorPayload, toErrorPayload } from '../src/errors.js';
import { installErrorTransfer } from '../src/protocol.js';
import { rejection } from './fixtures/rejection.js';

interface Api {
  fail(kind: 'selfxit' | 'error' | 'string'): Promise<void>;
  callBack(fn: () => void): Promise<string>;
}

const channels: MessageChannel[] = [];
afterEach(() => {
  for (const c of channels.splice(0)) {
    c.port1.close();
    c.port2.close();
  }
});

/** An exposed object on one port and its comlink proxy on the other. */
function link(): Remote<Api> {
  installErrorTransfer();
  const channel = new MessageChannel();
  channels.push(channel);
  const api: Api = {
    async fail(kind) {
      if (kind === 'selfxit') throw new SelfxitError('FETCH_FAILED', 'GET x: HTTP 404', { status: 404, file: 'x' });
      if (kind === 'error') throw new TypeError('boom');
      throw 'a string';
    },
    async callBack(fn) {
      try {
        await fn();
        return 'resolved';
      } catch (e) {
        return e instanceof SelfxitError ? `${e.code}: ${e.message}` : 'not a SelfxitError';
      }
    },
  };
  expose(api, channel.port1);
  return wrap<Api>(channel.port2);
}

describe('SelfxitError across comlink', () => {
  it('arrives as a SelfxitError with the same code, message and details', async () => {
    const e = await rejection(link().fail('selfxit'));
    expect(e).toBeInstanceOf(SelfxitError);
    expect(e).toMatchObject({
      name: 'SelfxitError',
      code: 'FETCH_FAILED',
      message: 'GET x: HTTP 404',
      details: { status: 404, file: 'x' },
    });
  });

  it('any other thrown value arrives as INTERNAL, keeping the message', async () => {
    const remote = link();
    const err = await rejection(remote.fail('error'));
    expect(err).toBeInstanceOf(SelfxitError);
    expect(err).toMatchObject({ code: 'INTERNAL', message: 'boom', details: undefined });
    expect(await rejection(remote.fail('string'))).toMatchObject({ code: 'INTERNAL', message: 'a string' });
  });

  it('works the other way too: a page callback that throws rejects in the worker as a SelfxitError', async () => {
    const remote = link();
    const answer = await remote.callBack(
      proxy(() => {
        throw new SelfxitError('ABORTED', 'stopped');
      }),
    );
    expect(answer).toBe('ABORTED: stopped');
  });

  it('installs once (idempotent), and the payload round trip keeps code, message, details and stack', async () => {
    installErrorTransfer();
    installErrorTransfer();
    expect(await rejection(link().fail('selfxit'))).toMatchObject({ code: 'FETCH_FAILED' });
    const original = new SelfxitError('INVALID_INPUT', 'bad', { inputIndex: 2 });
    const back = fromErrorPayload(toErrorPayload(original));
    expect(back).toBeInstanceOf(SelfxitError);
    expect({ code: back.code, message: back.message, details: back.details, stack: back.stack }).toEqual({
      code: original.code,
      message: original.message,
      details: original.details,
      stack: original.stack,
    });
  });
});

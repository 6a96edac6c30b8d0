// Worker entry: serves the runtime API to the page through comlink (the page creates this module as a module worker).
import { expose } from 'comlink';
import { installErrorTransfer } from '../protocol.js';
import { createWorkerApi } from './api.js';

installErrorTransfer();
expose(createWorkerApi());

// Service worker of the demo: serves bundles prepared in the page ("bring your own model") from Cache Storage at
// <base>/byom/<id>/…, so load() can open an in-memory bundle by URL like any other. Every other request passes through.
/// <reference lib="webworker" />
export {};
declare const self: ServiceWorkerGlobalScope;

/** Cache Storage bucket the page writes prepared bundles into (see byom.ts). */
const CACHE = 'selfxit-demo-byom';

self.addEventListener('install', () => void self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));
self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin || !url.pathname.includes('/byom/')) return;
  event.respondWith(
    caches
      .open(CACHE)
      .then((cache) => cache.match(url.href))
      .then(
        (hit) =>
          hit ??
          new Response('not in the in-memory bundle', {
            status: 404,
            headers: { 'Cross-Origin-Resource-Policy': 'same-origin' },
          }),
      ),
  );
});

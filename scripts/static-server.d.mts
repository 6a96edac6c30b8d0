// Types of scripts/static-server.mjs (plain JS so that the Node scripts run without a build).

/** Serves `mounts` (URL prefix → folder) on `host:port` (0: any free port); `isolation: false` drops COOP/COEP;
 * `cors: true` sends `Access-Control-Allow-Origin: *`. */
export function serveStatic(options: {
  mounts: Record<string, string>;
  port: number;
  host?: string;
  isolation?: boolean;
  cors?: boolean;
}): Promise<{ url: string; close(): Promise<unknown> }>;

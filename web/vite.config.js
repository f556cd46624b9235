// Vite build of the dashboard. The output (dist/) is embedded into the joule binary by
// src/web/CMakeLists.txt; only "/" and "/assets/..." are served, so every asset goes to
// assets/ with a content hash in its name (cached as immutable by the server).
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    target: 'es2020',
    sourcemap: false,
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
  server: {
    // `npm run dev` proxies the API to a local joule (JOULE_URL, default :8080).
    proxy: {
      '/v1': process.env.JOULE_URL || 'http://127.0.0.1:8080',
    },
  },
});

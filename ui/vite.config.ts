import { defineConfig } from "vite";

// Relative asset URLs: the app works under any base path (API Gateway
// serves it under its stage, `/Prod/`), and calls the API relative to it.
export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 1500,
    rollupOptions: {
      // rjsf marks its modules "use client" for server components; a plain SPA has none.
      onwarn(warning: any, warn: (w: any) => void) {
        if (warning.code !== "MODULE_LEVEL_DIRECTIVE") warn(warning);
      },
    },
  },
  oxc: { jsx: { runtime: "automatic" } },
  test: { environment: "node", include: ["test/**/*.test.ts"] },
} as any);

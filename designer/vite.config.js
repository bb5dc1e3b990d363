// Builds the designer into the dashboard's static files: one module (designer.js) and one style sheet
// (designer.css), fixed names and no source maps, so the committed bundle is reproducible byte for byte.
import { fileURLToPath } from "node:url";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

const outDir = fileURLToPath(new URL("../app/dashboard/static/designer", import.meta.url));

export default defineConfig({
  plugins: [react()],
  base: "./",
  build: {
    outDir,
    emptyOutDir: true,
    sourcemap: false,
    cssCodeSplit: false,
    modulePreload: false,
    copyPublicDir: false,
    target: "es2020",
    reportCompressedSize: false,
    chunkSizeWarningLimit: 1500,
    rolldownOptions: {
      input: fileURLToPath(new URL("src/main.jsx", import.meta.url)),
      output: {
        entryFileNames: "designer.js",
        assetFileNames: "designer[extname]",
        codeSplitting: false,
      },
    },
  },
  test: {
    include: ["test/**/*.test.js"],
    environment: "node",
  },
});

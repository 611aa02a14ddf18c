// The vendored libraries, imported in one place (versions: ../vendor/VENDORED.md).
import { h } from "../vendor/preact-11.2.0.mjs";
import htm from "../vendor/htm-3.1.1.mjs";

export { h, render, Fragment } from "../vendor/preact-11.2.0.mjs";
export { useState, useEffect, useRef, useMemo } from "../vendor/preact-hooks-11.2.0.mjs";
export { default as uPlot } from "../vendor/uplot-1.6.32.mjs";

export const html = htm.bind(h);

// htm bound to Preact: templates are parsed into elements, never into HTML
// strings, so every value from the server is rendered as text.
import { h } from 'preact';
import htm from 'htm';

export const html = htm.bind(h);

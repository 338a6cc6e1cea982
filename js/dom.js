// DOM helpers of the dashboard: elements from tag, attributes and children. Text always
// goes through textContent (the `text` attribute), never through HTML.

const SVG = "http://www.w3.org/2000/svg";

/** An HTML element: `class`, `text`, `on<event>` handlers and plain attributes. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

/** An SVG element with the given attributes. */
export function s(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

/** Make ``nodes`` the children of ``parent``, in that order, touching the DOM only when
 * they are not already (nodes kept from the last update stay where they are). */
export function placeInOrder(parent, nodes) {
  const current = parent.children;
  if (current.length !== nodes.length || nodes.some((node, i) => current[i] !== node)) parent.replaceChildren(...nodes);
}

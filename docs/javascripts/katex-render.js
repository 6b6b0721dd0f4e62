// Typeset the math that pymdownx.arithmatex (generic mode) leaves in the pages, \( \) inline and
// \[ \] displayed, with the copy of KaTeX shipped in javascripts/katex/: the site needs no
// network to show its formulas. Only arithmatex's own spans and divs are searched, so a "\(" in
// code or prose is left alone.
function renderMath(root) {
  for (const element of root.querySelectorAll(".arithmatex")) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false, // a formula KaTeX cannot parse is shown as its source, in red
    });
  }
}

// Material's document$ emits each page, also after instant navigation swaps one in.
document$.subscribe(({ body }) => renderMath(body));

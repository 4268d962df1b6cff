//! Section narrative made safe to store and show: CDA narrative blocks and STU3 XHTML are
//! rebuilt element by element from an allow-list (paragraphs, lists, tables, emphasis, line
//! breaks), text escaped, every attribute dropped. Nothing a sender writes reaches a reader's
//! browser as markup we did not make: no script, style, link target or event handler.

use roxmltree::{Node, NodeType};

const XHTML: &str = "http://www.w3.org/1999/xhtml";

/// Element nesting a narrative may have: far above any real one, and a bound on recursion (a
/// hostile document nested a hundred thousand deep must be refused, not overflow the stack).
pub const MAX_DEPTH: usize = 64;

/// A div of one paragraph of text.
pub fn plain(text: &str) -> String {
    format!("<div xmlns=\"{XHTML}\"><p>{}</p></div>", escape(text))
}

/// A div of one paragraph per line of text.
pub fn paragraphs(lines: &[String]) -> String {
    let body: String = lines.iter().filter(|line| !line.trim().is_empty()).map(|line| format!("<p>{}</p>", escape(line))).collect();
    format!("<div xmlns=\"{XHTML}\">{body}</div>")
}

/// The narrative of a CDA section's `<text>` (or any element whose children are narrative);
/// `None` when it says nothing; an error when it nests deeper than [`MAX_DEPTH`].
pub fn from_node(node: Node<'_, '_>) -> Result<Option<String>, String> {
    let mut body = String::new();
    for child in node.children() {
        write(child, &mut body, 1)?;
    }
    Ok(finish(body))
}

/// An STU3 `Narrative.div`, rebuilt; an error names why it cannot be read.
pub fn from_xhtml(div: &str) -> Result<Option<String>, String> {
    let document = roxmltree::Document::parse(div).map_err(|error| format!("the narrative is not well-formed XHTML: {error}"))?;
    from_node(document.root_element())
}

fn finish(body: String) -> Option<String> {
    let has_text = body.split(['<', '>']).enumerate().any(|(index, part)| index % 2 == 0 && !part.trim().is_empty());
    has_text.then(|| format!("<div xmlns=\"{XHTML}\">{body}</div>"))
}

/// What an element becomes: an allowed XHTML element, its children alone, or nothing.
enum Rendering {
    Element(&'static str),
    Children,
    Dropped,
}

fn rendering(node: Node<'_, '_>) -> Rendering {
    let name = node.tag_name().name();
    let style = node.attribute("styleCode").unwrap_or_default();
    match name {
        "paragraph" | "p" => Rendering::Element("p"),
        "list" if node.attribute("listType") == Some("ordered") => Rendering::Element("ol"),
        "list" | "ul" => Rendering::Element("ul"),
        "ol" => Rendering::Element("ol"),
        "item" | "li" => Rendering::Element("li"),
        "table" => Rendering::Element("table"),
        "thead" => Rendering::Element("thead"),
        "tbody" => Rendering::Element("tbody"),
        "tfoot" => Rendering::Element("tfoot"),
        "tr" => Rendering::Element("tr"),
        "td" => Rendering::Element("td"),
        "th" => Rendering::Element("th"),
        "caption" if node.parent_element().is_some_and(|p| p.tag_name().name() == "table") => Rendering::Element("caption"),
        "caption" | "b" | "strong" => Rendering::Element("b"),
        "content" if style.contains("Bold") => Rendering::Element("b"),
        "content" if style.contains("Italics") => Rendering::Element("i"),
        "i" | "em" => Rendering::Element("i"),
        "br" => Rendering::Element("br"),
        "sub" => Rendering::Element("sub"),
        "sup" => Rendering::Element("sup"),
        "pre" => Rendering::Element("pre"),
        "code" => Rendering::Element("code"),
        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => Rendering::Element("h4"),
        "div" | "blockquote" => Rendering::Element("div"),
        "script" | "style" | "renderMultiMedia" | "object" | "iframe" | "img" | "head" | "title" => Rendering::Dropped,
        // content, span, linkHtml, a, footnote and anything unknown: their text only.
        _ => Rendering::Children,
    }
}

fn write(node: Node<'_, '_>, out: &mut String, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("the narrative nests elements more than {MAX_DEPTH} deep"));
    }
    match node.node_type() {
        NodeType::Text => out.push_str(&escape(node.text().unwrap_or_default())),
        NodeType::Element => match rendering(node) {
            Rendering::Dropped => {}
            Rendering::Children => {
                for child in node.children() {
                    write(child, out, depth + 1)?;
                }
            }
            Rendering::Element("br") => out.push_str("<br/>"),
            Rendering::Element(name) => {
                out.push('<');
                out.push_str(name);
                out.push('>');
                for child in node.children() {
                    write(child, out, depth + 1)?;
                }
                out.push_str("</");
                out.push_str(name);
                out.push('>');
            }
        },
        _ => {}
    }
    Ok(())
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() && c != '\n' && c != '\t' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cda_narrative_becomes_xhtml_without_attributes() {
        let xml = r#"<text xmlns="urn:hl7-org:v3"><paragraph ID="a" styleCode="x">Fell &amp; <content styleCode="Bold">broke</content> hip</paragraph><list listType="ordered"><item>one</item></list><table border="1"><caption>c</caption><tbody><tr><td>x</td></tr></tbody></table><renderMultiMedia referencedObject="i"/><linkHtml href="javascript:alert(1)">link</linkHtml></text>"#;
        let document = roxmltree::Document::parse(xml).unwrap();
        assert_eq!(
            from_node(document.root_element()).unwrap().unwrap(),
            format!(
                "<div xmlns=\"{XHTML}\"><p>Fell &amp; <b>broke</b> hip</p><ol><li>one</li></ol><table><caption>c</caption><tbody><tr><td>x</td></tr></tbody></table>link</div>"
            )
        );
    }

    #[test]
    fn xhtml_is_rebuilt_without_script_or_handlers() {
        let div = r#"<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="steal()">Hi <a href="http://x">there</a></p><script>alert(1)</script><img src="x" onerror="y"/></div>"#;
        assert_eq!(from_xhtml(div).unwrap().unwrap(), format!("<div xmlns=\"{XHTML}\"><p>Hi there</p></div>"));
        assert!(from_xhtml("<div><p>unclosed</div>").unwrap_err().contains("not well-formed"));
        assert_eq!(from_xhtml("<div xmlns=\"http://www.w3.org/1999/xhtml\">  <p> </p></div>").unwrap(), None);
        let deep = format!("<div>{}x{}</div>", "<p>".repeat(100_000), "</p>".repeat(100_000));
        assert!(from_xhtml(&deep).unwrap_err().contains("more than 64 deep"), "refused, not a stack overflow");
    }
}

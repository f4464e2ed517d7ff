//! EC2 Query responses: XML in the `http://ec2.amazonaws.com/doc/2016-11-15/` namespace,
//! and the EC2 error document.

use quick_xml::escape::escape;

/// The EC2 API namespace.
pub const NS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// A response being written.
#[derive(Debug, Default)]
pub struct Xml {
    out: String,
}

impl Xml {
    /// `<{action}Response xmlns=…><requestId>…</requestId>`.
    #[must_use]
    pub fn response(action: &str, request_id: &str) -> Xml {
        let mut x = Xml {
            out: format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>{}<{action}Response xmlns="{NS}">"#,
                "\n"
            ),
        };
        x.leaf("requestId", request_id);
        x
    }

    /// Opens `<tag>`.
    pub fn open(&mut self, tag: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// Closes `</tag>`.
    pub fn close(&mut self, tag: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// `<tag>text</tag>`, escaped.
    pub fn leaf(&mut self, tag: &str, text: &str) -> &mut Self {
        self.open(tag);
        self.out.push_str(&escape(text));
        self.close(tag)
    }

    /// A leaf when the value is present.
    pub fn opt(&mut self, tag: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.leaf(tag, t);
        }
        self
    }

    /// `<tagSet><item><key>…</key><value>…</value></item>…</tagSet>`.
    pub fn tags(&mut self, tags: &[catalog::Tag]) -> &mut Self {
        self.open("tagSet");
        for t in tags {
            self.open("item")
                .leaf("key", &t.key)
                .leaf("value", &t.value)
                .close("item");
        }
        self.close("tagSet")
    }

    /// Closes the response and returns the document.
    #[must_use]
    pub fn finish(mut self, action: &str) -> String {
        self.out.push_str(&format!("</{action}Response>"));
        self.out
    }
}

/// The EC2 error document.
#[must_use]
pub fn error(code: &str, message: &str, request_id: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>{}<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>"#,
        "\n",
        escape(code),
        escape(message),
        escape(request_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_and_namespaced() {
        let mut x = Xml::response("DescribeImages", "r-1");
        x.open("imagesSet")
            .open("item")
            .leaf("name", "a<b&\"c\"")
            .close("item")
            .close("imagesSet");
        let s = x.finish("DescribeImages");
        assert!(s.contains(r#"<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r-1</requestId>"#));
        assert!(s.contains("<name>a&lt;b&amp;&quot;c&quot;</name>"));
        assert!(s.ends_with("</DescribeImagesResponse>"));
        assert!(
            error("AuthFailure", "x < y", "r")
                .contains("<Code>AuthFailure</Code><Message>x &lt; y</Message>")
        );
    }
}

//! The toy language: functions of 64-bit integers.
//!
//! ```text
//! fn fib(n) -> (r) {        # `r` is the result; every variable starts at 0
//!     if n < 2 { r = n } else { r = fib(n - 1) + fib(n - 2) }
//! }
//! ```
//!
//! Statements: `x = e`, `if e { .. } else { .. }`, `while e { .. }`, and calls. Expressions:
//! integers, variables, calls, `+ - * / %`, comparisons (`== != < <= > >=`, giving 0 or 1),
//! unary `-`, parentheses. A call to a function the program does not define is a call into
//! libc (`putchar`).

/// A function as parsed, with where it is in the source.
pub struct Function {
    pub name: String,
    pub params: Vec<String>,
    pub result: String,
    pub body: Vec<Stmt>,
    /// Line of the `fn` keyword.
    pub line: u32,
    /// Its text, for the fingerprint that tells the next build whether it changed.
    pub text: String,
}

pub enum Stmt {
    Assign {
        var: String,
        value: Expr,
        line: u32,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
        otherwise: Vec<Stmt>,
        line: u32,
    },
    While {
        cond: Expr,
        body: Vec<Stmt>,
        line: u32,
    },
    Expr {
        value: Expr,
        line: u32,
    },
}

pub enum Expr {
    Int(i64),
    Var(String),
    Call(String, Vec<Expr>),
    Neg(Box<Expr>),
    Binary(Op, Box<Expr>, Box<Expr>),
}

#[derive(Clone, Copy, PartialEq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, PartialEq, Debug)]
enum Tok {
    Int(i64),
    Ident(String),
    Punct(&'static str),
}

struct Token {
    tok: Tok,
    line: u32,
    /// Byte offsets in the source.
    start: usize,
    end: usize,
}

/// An error at a line of the source.
#[derive(Debug)]
pub struct Error {
    pub line: u32,
    pub message: String,
}

/// Longest first, so `->` is not read as `-`.
const PUNCTS: [&str; 19] = [
    "->", "==", "!=", "<=", ">=", "(", ")", "{", "}", ",", "=", "<", ">", "+", "-", "*", "/", "%",
    ";",
];

fn lex(src: &str) -> Result<Vec<Token>, Error> {
    let (bytes, mut i, mut line, mut out) = (src.as_bytes(), 0, 1, Vec::new());
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if c.is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let value = src[start..i].parse().map_err(|_| Error {
                line,
                message: format!("`{}` does not fit in 64 bits", &src[start..i]),
            })?;
            out.push(Token {
                tok: Tok::Int(value),
                line,
                start,
                end: i,
            });
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let tok = Tok::Ident(src[start..i].to_string());
            out.push(Token {
                tok,
                line,
                start,
                end: i,
            });
        } else {
            let Some(p) = PUNCTS.iter().find(|p| src[i..].starts_with(**p)) else {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(Error {
                    line,
                    message: format!("unexpected `{ch}`"),
                });
            };
            i += p.len();
            out.push(Token {
                tok: Tok::Punct(p),
                line,
                start,
                end: i,
            });
        }
    }
    Ok(out)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    at: usize,
}

/// Parse a whole program.
pub fn parse(src: &str) -> Result<Vec<Function>, Error> {
    let mut p = Parser {
        src,
        toks: lex(src)?,
        at: 0,
    };
    let mut functions = Vec::new();
    while p.at < p.toks.len() {
        functions.push(p.function()?);
    }
    Ok(functions)
}

impl Parser<'_> {
    fn line(&self) -> u32 {
        self.toks
            .get(self.at)
            .or(self.toks.last())
            .map_or(1, |t| t.line)
    }

    fn error<T>(&self, message: String) -> Result<T, Error> {
        Err(Error {
            line: self.line(),
            message,
        })
    }

    fn peek(&self, p: &str) -> bool {
        matches!(self.toks.get(self.at), Some(Token { tok: Tok::Punct(q), .. }) if *q == p)
    }

    fn eat(&mut self, p: &str) -> bool {
        let found = self.peek(p);
        self.at += usize::from(found);
        found
    }

    fn expect(&mut self, p: &str) -> Result<(), Error> {
        if self.eat(p) {
            Ok(())
        } else {
            self.error(format!("expected `{p}`"))
        }
    }

    fn ident(&mut self) -> Result<String, Error> {
        match self.toks.get(self.at) {
            Some(Token {
                tok: Tok::Ident(s), ..
            }) => {
                self.at += 1;
                Ok(s.clone())
            }
            _ => self.error("expected a name".into()),
        }
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.toks.get(self.at), Some(Token { tok: Tok::Ident(s), .. }) if s == k)
    }

    fn function(&mut self) -> Result<Function, Error> {
        let (line, start) = (self.line(), self.toks[self.at].start);
        if !self.keyword("fn") {
            return self.error("expected `fn`".into());
        }
        self.at += 1;
        let name = self.ident()?;
        self.expect("(")?;
        let mut params = Vec::new();
        while !self.eat(")") {
            params.push(self.ident()?);
            if !self.peek(")") {
                self.expect(",")?;
            }
        }
        self.expect("->")?;
        self.expect("(")?;
        let result = self.ident()?;
        self.expect(")")?;
        let body = self.block()?;
        let end = self.toks[self.at - 1].end;
        let text = self.src[start..end].to_string();
        Ok(Function {
            name,
            params,
            result,
            body,
            line,
            text,
        })
    }

    fn block(&mut self) -> Result<Vec<Stmt>, Error> {
        self.expect("{")?;
        let mut stmts = Vec::new();
        while !self.eat("}") {
            if self.at >= self.toks.len() {
                return self.error("expected `}`".into());
            }
            stmts.push(self.stmt()?);
            self.eat(";");
        }
        Ok(stmts)
    }

    fn stmt(&mut self) -> Result<Stmt, Error> {
        let line = self.line();
        if self.keyword("if") {
            self.at += 1;
            let cond = self.expr()?;
            let then = self.block()?;
            let otherwise = if self.keyword("else") {
                self.at += 1;
                self.block()?
            } else {
                Vec::new()
            };
            return Ok(Stmt::If {
                cond,
                then,
                otherwise,
                line,
            });
        }
        if self.keyword("while") {
            self.at += 1;
            let cond = self.expr()?;
            let body = self.block()?;
            return Ok(Stmt::While { cond, body, line });
        }
        let assign = matches!(
            self.toks.get(self.at + 1),
            Some(Token {
                tok: Tok::Punct("="),
                ..
            })
        );
        if assign {
            let var = self.ident()?;
            self.expect("=")?;
            return Ok(Stmt::Assign {
                var,
                value: self.expr()?,
                line,
            });
        }
        Ok(Stmt::Expr {
            value: self.expr()?,
            line,
        })
    }

    fn expr(&mut self) -> Result<Expr, Error> {
        let left = self.sum()?;
        let ops = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
        ];
        let ops = ops.into_iter().chain([("<", Op::Lt), (">", Op::Gt)]);
        for (p, op) in ops {
            if self.eat(p) {
                return Ok(Expr::Binary(op, Box::new(left), Box::new(self.sum()?)));
            }
        }
        Ok(left)
    }

    fn sum(&mut self) -> Result<Expr, Error> {
        let mut left = self.product()?;
        loop {
            let op = if self.eat("+") {
                Op::Add
            } else if self.eat("-") {
                Op::Sub
            } else {
                return Ok(left);
            };
            left = Expr::Binary(op, Box::new(left), Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Expr, Error> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat("*") {
                Op::Mul
            } else if self.eat("/") {
                Op::Div
            } else if self.eat("%") {
                Op::Rem
            } else {
                return Ok(left);
            };
            left = Expr::Binary(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, Error> {
        if self.eat("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let e = self.expr()?;
            self.expect(")")?;
            return Ok(e);
        }
        match self.toks.get(self.at).map(|t| t.tok.clone()) {
            Some(Tok::Int(v)) => {
                self.at += 1;
                Ok(Expr::Int(v))
            }
            Some(Tok::Ident(name)) => {
                self.at += 1;
                if !self.eat("(") {
                    return Ok(Expr::Var(name));
                }
                let mut args = Vec::new();
                while !self.eat(")") {
                    args.push(self.expr()?);
                    if !self.peek(")") {
                        self.expect(",")?;
                    }
                }
                Ok(Expr::Call(name, args))
            }
            _ => self.error("expected an expression".into()),
        }
    }
}

//! The generator's world: a seeded random source, the pool of images (indexes sharing layers,
//! signed ones, referrers) and the repositories that hold them.

use super::*;

/// A deterministic generator: proptest's ChaCha [`TestRng`] seeded from the case's seed.
pub(super) struct Gen(pub(super) TestRng);

impl Gen {
    pub(super) fn new(seed: u64) -> Gen {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Gen(TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
    }

    /// `0..n`.
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }

    /// `lo..=hi`.
    pub(super) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub(super) fn percent(&mut self, p: u64) -> bool {
        self.0.next_u64() % 100 < p
    }

    pub(super) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Each item with even odds, order kept, at least `min` of them.
    pub(super) fn subset<T: Clone>(&mut self, items: &[T], min: usize) -> Vec<T> {
        loop {
            let out: Vec<T> = items.iter().filter(|_| self.percent(50)).cloned().collect();
            if out.len() >= min {
                return out;
            }
        }
    }
}

/// An image of a case's pool, with what travels with it wherever it is.
pub(super) struct Pooled {
    pub(super) image: Image,
    /// cosign-style artifacts, tagged `sha256-<hex>.sig/.att/.sbom`.
    pub(super) cosign: Vec<(String, Image)>,
    /// OCI referrers of a subject (the image or a child of it), stored untagged and listed in
    /// the subject's `sha256-<hex>` fallback index.
    pub(super) referrers: Option<(Image, Vec<Image>)>,
}

pub(super) fn random_pool(g: &mut Gen, seed: u64, shape: Shape) -> Vec<Pooled> {
    // Shared across the pool: the first two as bases, the rest on top.
    let layers: Vec<Blob> = (0..5u64)
        .map(|i| layer(0xd1ff_0000 + i, 512 + 384 * i as usize))
        .collect();
    let mut pool: Vec<Pooled> = (0..g.range(3, 6))
        .map(|i| {
            let format = if g.percent(20) {
                Format::Docker
            } else {
                Format::Oci
            };
            let label = format!("differential-{seed}-{i}");
            let single = |g: &mut Gen, (os, arch): (&str, &str)| {
                let layers = [layers[g.below(2)].clone(), layers[2 + g.below(3)].clone()];
                image(&layers, os, arch, format, &label)
            };
            let image = if g.percent(40) {
                let platforms = g.subset(&PLATFORMS, 2);
                index(
                    platforms.into_iter().map(|p| single(g, p)).collect(),
                    format,
                )
            } else {
                let p = *g.pick(&PLATFORMS[..2]);
                single(g, p)
            };
            // A referrer's subject: the image, or now and then a child of an index.
            let subject = |g: &mut Gen| match image.children.len() {
                0 => image.clone(),
                n if g.percent(30) => image.children[g.below(n)].clone(),
                _ => image.clone(),
            };
            let mut cosign = Vec::new();
            if g.percent(50) {
                let s = subject(g);
                cosign.push(match g.below(5) {
                    0 => cosign_attestation(&s, SIGNED_REPO),
                    1 => cosign_sbom(&s),
                    _ => cosign_signature(&s, SIGNED_REPO),
                });
            }
            let mut referrers = None;
            if g.percent(40) {
                let s = subject(g);
                let attestation = || oci_attestation(&s, SIGNED_REPO);
                let sbom = || oci_referrer(&s, SPDX, format!("sbom of {label}").as_bytes());
                let attestation_first = g.percent(50);
                let mut listed = vec![if attestation_first {
                    attestation()
                } else {
                    sbom()
                }];
                if g.percent(20) {
                    listed.push(if attestation_first {
                        sbom()
                    } else {
                        attestation()
                    });
                }
                if g.percent(20) {
                    // A signature of a referrer: found recursively.
                    cosign.push(cosign_signature(&listed[0], SIGNED_REPO));
                }
                referrers = Some((s, listed));
            }
            Pooled {
                image,
                cosign,
                referrers,
            }
        })
        .collect();
    // Now and then a child of an index is tagged on its own, too.
    for i in 0..pool.len() {
        if shape.lone_children && !pool[i].image.children.is_empty() && g.percent(25) {
            let child = g.pick(&pool[i].image.children).clone();
            pool.push(Pooled {
                image: child,
                cosign: Vec::new(),
                referrers: None,
            });
        }
    }
    pool
}

/// A repository's content: tags (each naming a pool image), and what travels with those
/// images.
pub(super) struct Repo {
    pub(super) name: String,
    pub(super) tags: Vec<(String, usize)>,
    /// Fallback indexes here also list a referrer of another tool's, which a copy into this
    /// repository must keep when it adds its own.
    pub(super) foreign: bool,
}

impl Repo {
    /// Tagged images (cosign artifacts and fallback indexes included) and untagged ones.
    pub(super) fn content(&self, pool: &[Pooled]) -> (Vec<(String, Image)>, Vec<Image>) {
        let mut tagged: Vec<(String, Image)> = self
            .tags
            .iter()
            .map(|(t, i)| (t.clone(), pool[*i].image.clone()))
            .collect();
        let mut untagged = Vec::new();
        let used: BTreeSet<usize> = self.tags.iter().map(|(_, i)| *i).collect();
        for i in used {
            tagged.extend(pool[i].cosign.iter().cloned());
            let Some((subject, referrers)) = &pool[i].referrers else {
                continue;
            };
            let mut listed = referrers.clone();
            if self.foreign {
                let payload = format!("another tool's, in {}", self.name);
                listed.push(oci_referrer(subject, FOREIGN, payload.as_bytes()));
            }
            tagged.push((
                format!("sha256-{}", hex_of(&subject.digest)),
                fallback_index(&listed.iter().collect::<Vec<_>>()),
            ));
            untagged.extend(listed);
        }
        (tagged, untagged)
    }

    pub(super) fn tag_names(&self) -> Vec<&str> {
        self.tags.iter().map(|(t, _)| t.as_str()).collect()
    }
}

/// The repositories of a case and the pool their tags name.
pub(super) struct World {
    pub(super) pool: Vec<Pooled>,
    pub(super) repos: Vec<Repo>,
}

impl World {
    /// The source repositories' names under `src/` (`a`, `team/c`).
    pub(super) fn sources(&self) -> Vec<String> {
        self.repos
            .iter()
            .filter_map(|r| r.name.strip_prefix("src/").map(str::to_string))
            .collect()
    }

    pub(super) fn repo(&self, name: &str) -> &Repo {
        self.repos
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no repository {name}"))
    }

    pub(super) async fn write(&self, place: &Place<'_>, repo: &Repo) {
        let (tagged, untagged) = repo.content(&self.pool);
        place.write(&repo.name, &tagged, &untagged).await;
    }
}

pub(super) fn random_world(g: &mut Gen, seed: u64, shape: Shape) -> World {
    let pool = random_pool(g, seed, shape);
    let mut repos: Vec<Repo> = Vec::new();
    for name in g.subset(&SOURCES, 1) {
        let tags = g.subset(&TAGS, 2);
        repos.push(Repo {
            name: format!("src/{name}"),
            tags: tags
                .into_iter()
                .map(|t| (t.to_string(), g.below(pool.len())))
                .collect(),
            foreign: false,
        });
    }
    let sources: Vec<String> = repos
        .iter()
        .map(|r| r.name["src/".len()..].to_string())
        .collect();

    // Content already at targets: some of the same tags with the same image or another, and
    // tags of their own.
    if g.percent(40) {
        for name in g.subset(&sources, 1) {
            let source = repos
                .iter()
                .find(|r| r.name == format!("src/{name}"))
                .unwrap();
            let mut tags = Vec::new();
            for (tag, image) in &source.tags {
                match g.below(4) {
                    0 => tags.push((tag.clone(), *image)),
                    1 => tags.push((tag.clone(), g.below(pool.len()))),
                    _ => {}
                }
            }
            for tag in TAGS {
                if !source.tag_names().contains(&tag) && g.percent(20) {
                    tags.push((tag.to_string(), g.below(pool.len())));
                }
            }
            if !tags.is_empty() {
                let area = if g.percent(80) { "dst" } else { "prod" };
                repos.push(Repo {
                    name: format!("{area}/{name}"),
                    tags,
                    foreign: g.percent(30),
                });
            }
        }
    }
    World { pool, repos }
}
